"""Which models and which token a request may use: the rules that make a public Space safe.

Locally (the default) the person at the keyboard owns the machine: any hub id or model folder, and
their HF_TOKEN. In public mode (``Settings.public``: a Space, or EMOTION_PUBLIC=1) a visitor picks only
from the bundled model, the owner's default and the allow-list; anything else is refused here, before
any file is looked at or any network call is made, with one message that says nothing about the server.
"""

from __future__ import annotations

import os

from emotion.errors import InputError
from emotion.settings import BUNDLED, Settings

PUBLIC_REFUSAL = "This app offers only the models in its list: pick one of them."


def allowed_models(settings: Settings) -> tuple[str, ...]:
    """The names a public visitor may choose, the bundled model first."""
    return tuple(dict.fromkeys([BUNDLED, settings.model, *settings.allowed_models]))


def check_model(model, settings: Settings) -> str:
    """The model name a request may use ("" = the default); InputError for anything else."""
    if model is None:
        return ""
    if not isinstance(model, str):
        raise InputError(f"The model must be given as text (a name from the list), not a {type(model).__name__}.")
    name = model.strip()
    if len(name) > settings.max_model_chars:
        raise InputError(f"The model name is too long (at most {settings.max_model_chars} characters).")
    if settings.public and name and name.lower() not in {m.lower() for m in allowed_models(settings)}:
        raise InputError(PUBLIC_REFUSAL)
    return name


def check_token(token) -> str | None:
    if token is None or token == "":
        return None
    if not isinstance(token, str) or len(token) > 500:
        raise InputError("The token must be a Hugging Face access token (text starting with hf_).")
    return token.strip() or None


def remote_token(visitor_token: str | None, settings: Settings) -> str | None:
    """The visitor's own token; the owner's HF_TOKEN only locally, or in public mode when the owner opts in.

    (In public mode the model has already passed check_model, so it is an allow-listed one.)
    """
    if visitor_token:
        return visitor_token
    if settings.public and not settings.share_token:
        return None
    return os.environ.get("HF_TOKEN", "").strip() or None


def download_token(settings: Settings) -> bool | None:
    """What hub downloads send: in public mode no token unless the owner opts in (None = huggingface_hub's
    default, HF_TOKEN; False = none at all), so a visitor can never reach the owner's private repos."""
    return None if not settings.public or settings.share_token else False
