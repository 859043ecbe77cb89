"""Units of time, named once."""

SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
