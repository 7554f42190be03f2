"""Push a trained adapter folder to the Hugging Face Hub, with its model card.

``push_plan`` says exactly which files would be uploaded (an adapter's config, safetensors weights, model
card and metrics; never pickles); ``push(..., dry_run_dir=...)`` writes that repo content to a local folder
instead of uploading, which is how it is tested offline. The token comes from the argument or ``HF_TOKEN``
and is never printed, logged or stored.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hora import cards
from hora.hub import redact
from hora.io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CARD, HEAD_CONFIG, HEAD_WEIGHTS, METRICS
from hora.validate import PICKLE_SUFFIXES, read_adapter_config


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
UPLOADED = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, CARD, METRICS, HEAD_CONFIG, HEAD_WEIGHTS)


class PushError(ValueError):
    """The adapter cannot be pushed; the message says why and what to do."""


@dataclass
class PushPlan:
    repo_id: str
    folder: Path
    files: list[str]  # relative to folder
    card: str  # README.md as it will be uploaded


def _minimal_card(config: dict, repo_id: str) -> str:
    """A card for an adapter folder that has none: what it is and how to load it."""
    method = str(config.get("peft_type", "adapter"))
    front = {"library_name": "peft", "base_model": config.get("base_model_name_or_path") or "unknown"}
    front["tags"] = ["hora", method.lower()]
    body = (
        f"# {repo_id}\n\nA {method} adapter trained with hora. Load it with `import hora, peft` and "
        "`peft.PeftModel.from_pretrained(base_model, repo_id)`."
    )
    return cards.render(front, body)


def push_plan(adapter_dir: str | os.PathLike, repo_id: str) -> PushPlan:
    """What pushing ``adapter_dir`` to ``repo_id`` would upload; refuses folders that are not safe adapters."""
    folder = Path(adapter_dir)
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise PushError(f"{str(repo_id)[:100]!r} is not a Hub repo id: use 'user-or-org/name'.")
    if (folder / HEAD_CONFIG).is_file():  # a head-only run: no PEFT adapter, a head tensor file
        config = {"peft_type": "head-only"}
    else:
        try:
            config = read_adapter_config(folder, trusted=True)  # the caller's own folder: its patterns are its own
        except ValueError as err:
            raise PushError(f"Cannot push {folder.name}: {err}") from err
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PushError(f"{folder.name} holds pickled files ({', '.join(pickles)}); hora pushes safetensors only.")
    files = [name for name in UPLOADED if (folder / name).is_file()]
    card_path = folder / CARD
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else _minimal_card(config, repo_id)
    if CARD not in files:
        files.append(CARD)
    return PushPlan(repo_id, folder, files, card)


def push(
    adapter_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = True,
    dry_run_dir: str | os.PathLike | None = None,
) -> str:
    """Upload the adapter with its card; returns the repo URL (or the dry-run folder).

    Repos are created private unless ``private=False``. ``dry_run_dir`` writes the exact repo content there
    instead of uploading (no token or network needed).
    """
    plan = push_plan(adapter_dir, repo_id)
    if dry_run_dir is not None:
        out = Path(dry_run_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in plan.files:
            if name == CARD:
                (out / name).write_text(plan.card, encoding="utf-8")
            else:
                shutil.copyfile(plan.folder / name, out / name)
        return str(out)
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise PushError("No Hugging Face token: set HF_TOKEN or pass one (it needs write access to the repo).")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(plan.folder),
            allow_patterns=[n for n in plan.files if n != CARD or (plan.folder / CARD).is_file()],
            commit_message="Upload adapter trained with hora",
        )
        if not (plan.folder / CARD).is_file():
            api.upload_file(path_or_fileobj=plan.card.encode(), path_in_repo=CARD, repo_id=repo_id)
    except OfflineModeIsEnabled as err:
        raise PushError("HF_HUB_OFFLINE is set: unset it to push to the Hub.") from err
    except (HfHubHTTPError, OSError) as err:  # the message never contains the token nor a server path
        detail = redact(str(err).replace(token, "***"), plan.folder)[:300]
        raise PushError(f"Pushing to {repo_id} failed: {type(err).__name__}: {detail}") from err
    except Exception as err:  # httpx's network errors are no OSError: the Hub could not be reached at all
        raise PushError(
            f"Could not reach the Hugging Face Hub to push to {repo_id} ({type(err).__name__}); check the network "
            "connection (and HF_ENDPOINT), then try again."
        ) from err
    return f"https://huggingface.co/{repo_id}"
