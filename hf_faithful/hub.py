"""Hub uploads for what hf-faithful produces (a saved folder, one commit).

Model cards live with what they describe: ``hf_faithful.pruning.card`` for pruned
models, ``hf_faithful.sccm.card`` for SCCM-trained ones.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import HfApi

# "name" or "user/name", as the Hub accepts them
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload with hf-faithful",
    api: HfApi | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns its URL."""
    if not repo_id or not REPO_ID_PATTERN.match(repo_id):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"no folder to upload at {folder}")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message
    )
    return getattr(commit, "commit_url", None) or str(commit)
