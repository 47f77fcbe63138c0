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
from concurrent.futures import ThreadPoolExecutor

import httpx2
import numpy as np
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError
from huggingface_hub.utils import hf_raise_for_status, http_backoff
from PIL import Image

from emotion.errors import InputError, RemoteError
from emotion.labels import LABELS, canonical
from emotion.policy import remote_token
from emotion.settings import BUNDLED, Settings

log = logging.getLogger(__name__)


class RetryingClient(InferenceClient):
    """InferenceClient whose calls are retried with huggingface_hub's exponential backoff on a 429, a 5xx,
    a timeout or a dropped connection (the stock client tries once)."""

    def __init__(self, *args, retries: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.retries = retries

    def _inner_post(self, request_parameters, *, stream: bool = False):
        if stream:  # not used for image classification; keep the stock path
            return super()._inner_post(request_parameters, stream=stream)
        try:
            response = http_backoff(
                "POST",
                request_parameters.url,
                max_retries=self.retries,
                base_wait_time=0.5,
                max_wait_time=4,
                json=request_parameters.json,
                content=request_parameters.data,
                headers=request_parameters.headers,
                timeout=self.timeout,
            )
        except httpx2.TimeoutException as exc:
            raise InferenceTimeoutError(f"Inference call timed out: {request_parameters.url}") from exc
        hf_raise_for_status(response)
        return response.content


class RemoteClassifier:
    backend = "remote"

    def __init__(self, model: str, token: str | None = None, timeout: float = 30.0, workers: int = 8, retries=2):
        if not token:
            raise RemoteError(
                "The remote backend needs a Hugging Face access token: paste one "
                "(https://huggingface.co/settings/tokens) into the token box, or set HF_TOKEN where the app runs."
            )
        self.name = model
        self.workers = workers
        self._client = RetryingClient(model=model, token=token, timeout=timeout, retries=retries)

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


def build(model: str, settings: Settings, token: str | None = None) -> RemoteClassifier:
    from emotion.backends.local import is_hub_id

    model = (model or "").strip()
    if model in ("", BUNDLED):
        # The bundled model exists only here: the Inference API serves the hub model it stands in for.
        model = settings.remote_model
    if not is_hub_id(model):
        raise InputError(f"'{model}' is not a Hugging Face model id like 'owner/model-name'.")
    return RemoteClassifier(
        model, remote_token(token, settings), settings.remote_timeout, settings.remote_workers, settings.remote_retries
    )
