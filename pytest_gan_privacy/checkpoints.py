"""Loading model weights safely: safetensors, or torch.load with weights_only=True.

Never unpickles arbitrary objects: a checkpoint that needs that is refused with a
message, not executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

# Keys under which common training scripts nest the model's weights.
_NESTED_KEYS = ("model", "state_dict", "model_state", "module")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat {name: tensor} dict on the CPU.

    Accepts safetensors files, plain state dicts and the official MAE format
    (`{"model": state_dict, ...}`); strips a DistributedDataParallel `module.` prefix.
    """
    from .errors import AuditInputError

    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"the checkpoint {path} does not exist or is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AuditInputError(
            f"refused to load {path}: it holds Python objects other than weights, which "
            f"could run code when unpickled ({str(exc).splitlines()[0]}). Save only the "
            "state dict, or convert it to safetensors."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise AuditInputError(
            f"cannot read the checkpoint {path}: {exc}. Give a .safetensors file or a "
            "torch state dict saved with torch.save(model.state_dict(), ...)"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AuditInputError(f"the checkpoint {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}
