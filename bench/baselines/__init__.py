"""The two baselines ciolake is measured against, served by the same uvicorn stack.

- ``ceiling``: a bare ASGI endpoint that reads the body and answers 200 (nothing is done).
- ``floor``: the naive design of a typical guide: a Flask handler that verifies the signature
  and calls ``deltalake.write_deltalake(..., mode="append")`` once per event.
"""
