"""flowbox: a self-hosted conversational-AI appliance."""

import os

# numpy's OpenBLAS on one thread (set before numpy loads it; a value in the environment is kept). flowbox's
# products are a message's vector against a few thousand others: split over threads, each call gains little and the
# threads then spin waiting for the next, on the cores the models and the server need. On 2 cores an intent
# message cost 26 ms of CPU in the server with OpenBLAS's default threads and 8.5 ms on one (3 ms more latency
# on an idle machine, more messages a second with four at a time), and training a flow's intent model took less.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
