"""One error root for ciolake, split into transient and terminal kinds.

Transient errors may succeed if retried later (a full disk, a busy table); terminal errors
will fail the same way every time (a bad key, a malformed request), so retrying is pointless.
"""


class CiolakeError(Exception):
    """Root of every error ciolake raises on purpose."""


class TransientError(CiolakeError):
    """The operation may succeed if retried later."""


class TerminalError(CiolakeError):
    """The operation will fail the same way if retried."""


class ConfigurationError(TerminalError):
    """Settings are missing or contradictory."""


class VerificationError(TerminalError):
    """A webhook request is not authentic.

    Attributes:
        reason: a short machine-readable reason, used in logs and metric labels.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class JournalUnavailableError(TransientError):
    """The journal cannot durably store a delivery right now (disk full, I/O error)."""


class BacklogFullError(TransientError):
    """Too many deliveries are journaled but not yet committed to the tables."""


class TableWriteError(TransientError):
    """A Delta commit failed; the batch stays in the journal and is retried."""


class InputError(TerminalError):
    """What the user asked for is wrong (a bad flag, range or file); the command exits 2."""


class DataDirBusyError(ConfigurationError):
    """Another process (a running ``ciolake serve``) owns the data directory."""


class TableUnreadableError(TerminalError):
    """A Delta table is missing its log or its log is damaged; an operator must act.

    Attributes:
        table: the table's name.
    """

    def __init__(self, table: str, message: str) -> None:
        super().__init__(message)
        self.table = table


class StoreUnavailableError(TransientError):
    """The table store (object storage, a remote file system) cannot be reached right now."""


class AnotherWriterError(TerminalError):
    """Another process commits as the one writer these tables allow (a second deriver)."""
