"""Hub repositories agfsync writes to: whose they are.

Every card agfsync writes (a dataset's by `agfsync publish`, a model's by `agfsync train
--push-to-hub`) carries the `agfsync` tag. A Hub repo that holds files and whose card
(README.md) lacks the tag was not made by agfsync: writing to it is refused, or, with
`--overwrite`, only the paths agfsync writes are replaced and nothing is deleted. The
Hub counterpart of `agfsync.ownership`'s rule for local folders.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml

from agfsync.errors import ConfigurationError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

AGFSYNC_TAG = "agfsync"
"""The tag of every card agfsync writes: a Hub repo's card and files are replaced only
when its card carries it (or with --overwrite)."""


def check_repo_is_ours(
    api: HfApi,
    repo_id: str,
    *,
    repo_type: Literal["dataset", "model"],
    existing: list[str],
    revision: str | None,
    overwrite: bool,
    replaced: str,
    new_repo_flag: str,
    card: str | None = None,
) -> bool:
    """Whether `repo_id` (whose files are `existing` at `revision`) is new, empty or made
    by agfsync (its card has the agfsync tag). Raises ConfigurationError for another
    repo unless `overwrite`. `replaced` says what writing would replace ("publishing
    would replace its card and data"); `new_repo_flag` is the option naming another
    repo; `card` is the card's text at `revision` when the caller has read it already
    (`card_text`)."""
    if not [path for path in existing if path != ".gitattributes"]:
        return True
    if "README.md" in existing:
        if card is None:
            card = card_text(api, repo_id, repo_type=repo_type, revision=revision)
        if _has_our_tag(card):
            return True
    if overwrite:
        logger.warning(
            "%s was not made by agfsync: --overwrite replaces only the files agfsync "
            "writes there and deletes nothing.",
            repo_id,
        )
        return False
    raise ConfigurationError(
        f"{repo_id} on the Hub holds files and its card (README.md) has no "
        f"{AGFSYNC_TAG!r} tag, so agfsync did not make it: {replaced}. Choose a new "
        f"{new_repo_flag}, or pass --overwrite to replace only the files agfsync writes "
        "(deleting nothing)."
    )


def card_text(
    api: HfApi, repo_id: str, *, repo_type: Literal["dataset", "model"], revision: str | None
) -> str:
    """The text of the repo's card (README.md) at `revision`; "" when it has none."""
    from huggingface_hub.errors import EntryNotFoundError

    with tempfile.TemporaryDirectory(prefix="agfsync-card-") as folder:
        try:
            path = api.hf_hub_download(
                repo_id, "README.md", repo_type=repo_type, revision=revision, local_dir=folder
            )
        except EntryNotFoundError:
            return ""
        return Path(path).read_text(encoding="utf-8", errors="replace")


def _has_our_tag(card: str) -> bool:
    from huggingface_hub import RepoCard

    try:
        tags = RepoCard(card).data.to_dict().get("tags") or []
    except (ValueError, TypeError, AttributeError, yaml.YAMLError):
        return False
    return isinstance(tags, list) and AGFSYNC_TAG in tags
