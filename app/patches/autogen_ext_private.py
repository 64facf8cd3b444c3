"""What the model clients take from autogen-ext's private modules, re-exported under plain names.

Written for autogen-ext 0.7.5 (private imports: ``autogen_ext.models.openai._openai_client``,
``autogen_ext.models.openai._model_info`` and ``autogen_ext.models._utils``). Needed for
correctness, so nothing here can be switched off: the provider clients are AutoGen's own, built
as AutoGen builds them.

- ``openai_client_from_config`` and ``azure_openai_client_from_config``: the SDK client AutoGen's
  ``OpenAIChatCompletionClient`` and ``AzureOpenAIChatCompletionClient`` make from their
  configuration (Azure's user agent included). The model registry makes one per provider and shares
  it between the model clients of every run, instead of one per agent per run
  (``app/engine/providers.py``): building the benchmark's team went from 0.27 to 0.12 ms of CPU
  (docs/performance.md, section 6).
- ``get_info``, and the base URLs AutoGen sends Gemini, Claude and Llama models to when no base URL
  is given: the model's capabilities, as AutoGen knows them.
- ``CreateParams``: what ``BaseOpenAIChatCompletionClient._process_create_args`` makes of a call.
- ``normalize_stop_reason``: a provider's ``finish_reason`` as AutoGen's ``CreateResult`` has it.

``ChunkReading`` (``app/engine/openai_stream.py``), a subclass of AutoGen's public
``BaseOpenAIChatCompletionClient``, also relies on its protected members: ``_process_create_args``
(the request, with every check AutoGen makes), ``_client`` (the SDK client) and the usage totals
``_total_usage`` and ``_actual_usage``. ``tests/engine/test_openai_stream.py`` and
``tests/providers/`` hold it to AutoGen's stock client, and
``tests/patches/test_autogen_ext_private.py`` holds what is here to AutoGen's own use of it.
"""

from __future__ import annotations

from autogen_ext.models._utils.normalize_stop_reason import normalize_stop_reason
from autogen_ext.models.openai._model_info import (
    ANTHROPIC_OPENAI_BASE_URL,
    GEMINI_OPENAI_BASE_URL,
    LLAMA_API_BASE_URL,
    get_info,
)
from autogen_ext.models.openai._openai_client import CreateParams
from autogen_ext.models.openai._openai_client import (
    _azure_openai_client_from_config as azure_openai_client_from_config,
)
from autogen_ext.models.openai._openai_client import (
    _openai_client_from_config as openai_client_from_config,
)

__all__ = [
    "ANTHROPIC_OPENAI_BASE_URL",
    "GEMINI_OPENAI_BASE_URL",
    "LLAMA_API_BASE_URL",
    "CreateParams",
    "azure_openai_client_from_config",
    "get_info",
    "normalize_stop_reason",
    "openai_client_from_config",
]
