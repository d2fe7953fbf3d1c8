"""``python -m tests.llama_server ARGS``: llama_cpp.server with ARGS, its weights kept out of AMX buffers as
flowbox keeps its own (``flowbox.models.llama_load``), so that it does not crash on a CPU with AMX."""

import runpy

from flowbox.models.llama_load import keep_weights_out_of_amx

keep_weights_out_of_amx()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
