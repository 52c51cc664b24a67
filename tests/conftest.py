"""Shared fixtures: offline, single-threaded, tiny models built from configs."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("XRAY_TEST_THREADS", "1")))

from tests.tiny import tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE tokenizer of about 400 tokens, trained in a second."""
    return tiny_tokenizer()


@pytest.fixture(autouse=True)
def fresh_streamlit_caches(request):
    """AppTest runs share Streamlit's process-wide caches: each test of the page starts with none."""
    if "AppTest" not in vars(request.module):
        yield
        return
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    yield
