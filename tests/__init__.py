"""The test suite. It starts its own Hub and makes its own caches and state: the settings of the
shell it runs in must not reach it (a developer with HF_HUB_OFFLINE=1 would see downloads fail),
so they are cleared before huggingface_hub is imported, as it reads some of them only then."""

import os

for _name in (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_ENDPOINT",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_TOKEN",
    "MODELCACHE_CONFIG",
    "MODELCACHE_INDEX",
    "MODELCACHE_STATE",
):
    os.environ.pop(_name, None)
