"""What changes when several processes train: the data step runs once, and the final weights are gathered whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from accelerate.utils import broadcast_object_list
from datasets import DatasetDict, load_from_disk
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_dir
from pipeline.training.checkpoints import dataset_fingerprint

Report = TypeVar("Report")
T = TypeVar("T")
FINGERPRINT_FILE = "q2_data_fingerprint"


def decided_by_main(decide: Callable[[], T], is_main: bool, world_size: int) -> T:
    """Run `decide` on the main process only and hand its result (picklable, small) to every process.

    A UserError on the main process is raised on every process: the others would otherwise wait forever at the
    next collective. Used for everything that reads the filesystem or the data, so all processes act alike even
    on nodes that do not share a filesystem.
    """
    if world_size == 1:
        return decide()
    box: list[Any] = [None, None]
    crash: BaseException | None = None
    if is_main:
        try:
            box[0] = decide()
        except UserError as err:
            box[1] = str(err)
        except Exception as err:  # a bug or an unexpected OSError: the others must not wait for a broadcast forever
            crash = err
            box[1] = f"the main process failed ({type(err).__name__}: {err}); see its traceback"
    broadcast_object_list(box, from_process=0)
    if crash is not None:
        raise crash
    if box[1] is not None:
        raise UserError(box[1])
    return box[0]


def leave_process_group() -> None:
    """Leave the process group alone (no barrier: the main process may still be evaluating) before exiting."""
    import torch.distributed as dist

    # Exiting still in the group can abort at exit (SIGABRT; seen on machine rank 1 of 2 machines).
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def build_data_once(
    build: Callable[[], tuple[DatasetDict, Report]], shared_dir: Path, is_main: bool, world_size: int
) -> tuple[DatasetDict, Report | None]:
    """The main process runs the data step and saves its result; the others wait, then load it.

    Without a filesystem shared with the main process (multi-node without shared storage) a process builds the
    same, deterministic dataset itself. Only the main process gets the report (only it prints and writes).
    """
    if world_size == 1:
        return build()
    built: list[tuple[DatasetDict, Report]] = []

    def build_and_share() -> str:
        built.append(build())
        fingerprint = dataset_fingerprint(built[0][0])
        try:
            with atomic_dir(shared_dir) as staging:
                built[0][0].save_to_disk(str(staging))
                (staging / FINGERPRINT_FILE).write_text(fingerprint)
        except OSError as err:
            raise UserError(
                f"cannot write the prepared data to {shared_dir}: {err.strerror or err}; free some disk space or "
                "choose another output_dir"
            ) from err
        return fingerprint

    fingerprint = decided_by_main(build_and_share, is_main, world_size)
    if is_main:
        return built[0]
    stamp = shared_dir / FINGERPRINT_FILE
    # A copy from an earlier run on a node that does not share the main process's disk has another stamp.
    # (load_from_disk gives new fingerprints, so the stamp is written beside the data.)
    if stamp.is_file() and stamp.read_text() == fingerprint:
        return load_from_disk(str(shared_dir)), None
    return build()[0], None


def full_model(trainer, is_main: bool) -> PreTrainedModel | None:
    """The trained model as one ordinary fp32 module (no autocast) on the main process (None elsewhere).

    DDP keeps a whole copy on every process. FSDP and DeepSpeed shard it: gathering the full state dict is a
    collective every process must join, after which the main process loads it into a plain model to evaluate and save.
    Under DeepSpeed with bf16/fp16 the module's weights are low-precision copies: the fp32 master weights are taken
    instead, so the saved model is the one the optimizer trained (as with 1 process).
    """
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        # Without the mixed-precision wrapper: under bf16/fp16 Accelerate wraps forward in autocast, and the held-out
        # evaluation would score in low precision (ties, changed decisions) instead of the Quick Start's fp32.
        return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False) if is_main else None
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if trainer.is_deepspeed_enabled:
        from deepspeed.utils import safe_get_full_fp32_param  # only importable where DeepSpeed is installed

        module = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        masters = {name: safe_get_full_fp32_param(param) for name, param in module.named_parameters()}  # collective
        if is_main:
            state_dict = {**state_dict, **{k: v for k, v in masters.items() if v is not None}}
    if not is_main:
        return None
    # The trainer's config, not the base model's: training may have set e.g. pad_token_id.
    model = AutoModelForSequenceClassification.from_config(trainer.accelerator.unwrap_model(trainer.model).config)
    model.load_state_dict({k: v.detach().float().cpu() for k, v in state_dict.items()})
    return model.to(trainer.accelerator.device)
