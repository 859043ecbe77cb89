"""The mistakes users make, each with the answer it gets: one module per command family.

Every case runs the real ``ciolake`` entry point in a subprocess and checks the exit code (2 for
bad input, 1 for a failure of the world) and the one line ``error: ...`` it prints, with no
traceback; the cases that once lost data also check that nothing answered 200 is lost.
"""
