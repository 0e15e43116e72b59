"""A model that cannot be loaded is one line naming the model and the config field that names it.

Loading goes through several libraries (transformers, open_clip, diffusers, huggingface_hub), each
with its own exceptions and tracebacks of dozens of lines; what a person needs is which setting to
fix. Used around every stage's setup() (both runners) and by the commands that load a model.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Iterator

from pipeline.typed import ConfigError

MODEL_WORDS = ("model", "pretrained", "vae", "text_encoder", "aesthetic")


class ModelLoadError(ConfigError):
    """A configured model that could not be loaded; the message names the field and the model."""


def model_fields(prefix: str, settings: Any) -> dict[str, Any]:
    """{dotted field: value} of the settings that name a model (a dataclass or a mapping)."""
    items = (dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings or {})).items()
    return {f"{prefix}.{name}": value for name, value in items
            if isinstance(value, str) and value and any(word in name for word in MODEL_WORDS)}


@contextmanager
def loading(fields: dict[str, Any]) -> Iterator[None]:
    """Inside: loading the models `fields` name; any error becomes a ModelLoadError naming one of them
    (the one the error mentions, else the first)."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as err:  # whatever the library raises: the setting is what to fix
        if not fields:
            raise
        import traceback

        text = "".join(traceback.format_exception(err))
        blamed = next((f for f, v in fields.items() if str(v) in text), next(iter(fields)))
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ModelLoadError(f"{blamed}: cannot load model {fields[blamed]!r}: {reason}") from None


def stage_loading(stage) -> Any:
    """`loading` for a stage's setup(): its fields that name models, as `stages.<name>.<field>`."""
    return loading(model_fields(f"stages.{stage.name}", stage))


def find_model_error(err: BaseException) -> ModelLoadError | None:
    """The ModelLoadError behind `err`, also when Ray wrapped it (actor death, task error)."""
    seen: set[int] = set()
    stack = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ModelLoadError):
            return current
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
        marker = "ModelLoadError: "  # Ray may carry only the worker's formatted traceback
        text = str(current)
        if marker in text:
            line = text[text.rindex(marker) + len(marker):].splitlines()[0]
            return ModelLoadError(line)
    return None
