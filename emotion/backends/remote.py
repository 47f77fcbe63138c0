"""Remote classification through the Hugging Face Inference API, one call per face, concurrently.

Gives the same (n, 7) probabilities as the local classifier. Every failure becomes
a RemoteError whose message says what to do; the token never appears in one.
There is no silent fallback to the local model.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import httpx2
import numpy as np
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError
from PIL import Image

from emotion.errors import RemoteError
from emotion.labels import LABELS, canonical

log = logging.getLogger(__name__)


def _token(token: str | None) -> str:
    token = (token or "").strip() or os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise RemoteError(
            "The remote backend needs a Hugging Face access token: set the HF_TOKEN environment variable "
            "or paste a token (https://huggingface.co/settings/tokens) into the token box."
        )
    return token


class RemoteClassifier:
    backend = "remote"

    def __init__(self, model: str, token: str | None = None, timeout: float = 30.0, workers: int = 8):
        self.name = model
        self.workers = workers
        self._client = InferenceClient(model=model, token=_token(token), timeout=timeout)

    def __call__(self, crops: list[Image.Image]) -> np.ndarray:
        if not crops:
            return np.zeros((0, len(LABELS)))
        with ThreadPoolExecutor(max_workers=min(self.workers, len(crops))) as pool:
            return np.stack(list(pool.map(self._one, crops)))

    def _one(self, crop: Image.Image) -> np.ndarray:
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        try:
            answer = self._client.image_classification(buffer.getvalue(), top_k=len(LABELS))
        except InferenceTimeoutError:
            raise RemoteError(
                f"The Inference API did not answer in time for '{self.name}' (the model may be loading "
                "or the service busy). Try again in a minute, or switch to the local backend."
            ) from None
        except HfHubHTTPError as exc:
            raise _http_error(exc, self.name) from None
        except TimeoutError:
            raise RemoteError(f"The request to the Inference API for '{self.name}' timed out. Try again.") from None
        except json.JSONDecodeError:
            raise _malformed(self.name) from None
        except (ValueError, StopIteration) as exc:
            # huggingface_hub raises ValueError when a 200 answer is not a list (parse_obj_as_list) ...
            if "Invalid input data" in str(exc):
                raise _malformed(self.name) from None
            # ... and these when no inference provider serves the model.
            raise RemoteError(
                f"No Inference Provider serves '{self.name}' for image classification. Choose another model "
                "or use the local backend."
            ) from None
        except (OSError, httpx2.TransportError):
            # huggingface_hub 2.x talks through httpx2, whose connection errors are not OSErrors.
            raise RemoteError(
                "Could not reach the Hugging Face Inference API (no network connection?). "
                "Use the local backend offline."
            ) from None
        return _scores(answer, self.name)


def _http_error(exc: HfHubHTTPError, model: str) -> RemoteError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    messages = {
        401: "The Hugging Face token was rejected (401). Check that it is valid and not expired.",
        403: "The token may not use the Inference API for this model (403). Give it the "
        "'Make calls to Inference Providers' permission, or accept the model's terms on its page.",
        404: f"The Inference API does not know the model '{model}' (404). Check the model id.",
        429: "The Inference API's rate limit or your monthly credits are used up (429). "
        "Wait a little, or use the local backend.",
    }
    if status in messages:
        return RemoteError(messages[status])
    if status is not None and status >= 500:
        return RemoteError(f"The Inference API failed on its side ({status}) for '{model}'. Try again later.")
    return RemoteError(f"The Inference API refused the request for '{model}' (HTTP {status}).")


def _malformed(model: str) -> RemoteError:
    return RemoteError(
        f"The Inference API sent an answer for '{model}' that is not a list of emotion labels with scores; "
        "this model may not be a facial-emotion classifier."
    )


def _scores(answer, model: str) -> np.ndarray:
    """Map an image_classification answer onto the 7 labels, summing to 1."""
    malformed = _malformed(model)
    if not isinstance(answer, (list, tuple)) or not answer:
        raise malformed
    scores = np.zeros(len(LABELS))
    for item in answer:
        label = item.get("label") if isinstance(item, dict) else getattr(item, "label", None)
        score = item.get("score") if isinstance(item, dict) else getattr(item, "score", None)
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise malformed from None
        name = canonical(label) if isinstance(label, str) else None
        if name is None or not math.isfinite(score) or score < 0:
            raise malformed
        scores[LABELS.index(name)] += score
    if scores.sum() <= 0:
        raise malformed
    return scores / scores.sum()


def build(model: str, settings, token: str | None = None) -> RemoteClassifier:
    from emotion.backends.local import is_hub_id
    from emotion.errors import InputError
    from emotion.settings import BUNDLED

    model = (model or "").strip() or settings.remote_model
    if model == BUNDLED:
        raise InputError("The bundled model runs only locally: pick a hub model for the remote backend.")
    if not is_hub_id(model):
        raise InputError(f"'{model}' is not a Hugging Face model id like 'owner/model-name'.")
    return RemoteClassifier(model, token, settings.remote_timeout, settings.remote_workers)
