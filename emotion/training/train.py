"""Train the bundled emotion ViT on FER-2013: CNN teachers first, then the hybrid ViT distilled from them.

    python -m emotion.training --out emotion/models/bundled          # the bundled model (one H100, see README)

1. Teachers: ``--teachers`` ResNet-18s (3x3 stride-1 stem, no max-pool), trained on Training with
   the GPU augmentation; they differ in seed and recipe (FER+ votes, mixup/cutmix) so their errors
   differ. They are not shipped.
2. Student: the hybrid ViT (ResNet stages -> 6x6 tokens -> transformer encoder), trained on the
   same augmented batches against the teachers' averaged soft predictions (temperature ``--kd-
   temperature``) and the labels.
3. Calibration: a softmax temperature fitted on PublicTest (NLL), stored in config.json.

Only Training is trained on; PublicTest is the validation split (epoch selection and the
temperature). Writes a standard Hugging Face folder (config.json, model.safetensors in fp16,
preprocessor_config.json) plus metrics.json with the command that made it. Every phase is
resumable: state is kept in ``--state`` after every epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from emotion.calibration import ece, fit_temperature, view_probs
from emotion.labels import LABELS
from emotion.training import fer

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str = "../shared/data/fer2013"  # FER-2013 folder with labels.csv
    pack: str = ".cache/fer2013.npz"  # packed JPEGs, made from `data` if missing
    out: str = "emotion/models/bundled"  # where the Hugging Face model folder is written
    state: str = ".cache/train_state"  # resumable checkpoints (safetensors + json), one folder per phase
    # Student (the shipped hybrid ViT)
    epochs: int = 120
    batch_size: int = 128
    lr: float = 1e-3  # AdamW peak learning rate, cosine decay after warmup
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    ferplus_weight: float = 0.3  # share of the label target taken from FER+ votes (cleaner labels)
    label_smoothing: float = 0.1
    mix_prob: float = 0.5  # share of batches mixed (mixup or cutmix, half each)
    image_size: int = 48  # FER-2013's own size; the CNN leaves a 6x6 token grid
    stem_width: int = 32
    stage_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    stage_blocks: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    stage_strides: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    hidden_size: int = 192  # transformer width (ViT-Tiny's)
    layers: int = 4  # transformer encoder layers
    heads: int = 3
    intermediate_size: int = 384
    # Teachers (ResNet-18s, not shipped) and distillation
    teachers: int = 3  # 0 trains the student on the labels alone
    teacher_epochs: int = 60
    teacher_width: int = 64  # channels of the first stage (ResNet-18: 64, 128, 256, 512)
    kd_weight: float = 0.8  # share of the loss from the teachers' soft predictions
    kd_temperature: float = 2.0
    # Train the teachers in parallel processes on the one GPU (small 48x48 models leave an H100 idle).
    parallel_teachers: int = 1
    only_teacher: int = -1  # train just this teacher and stop (used by the parallel processes)
    init: str = ""  # start the student from this model folder (architecture and weights)
    limit: int = 0  # use only the first n Training/PublicTest images (smoke runs)
    seed: int = 0
    threads: int = 0  # CPU threads; 0 keeps torch's default
    device: str = "auto"


# Teachers differ in recipe as well as seed: (FER+ weight, mix probability); cycled.
TEACHER_RECIPES = ((0.0, 0.0), (0.3, 0.0), (0.3, 0.5))


def build_model(cfg: TrainConfig):
    from emotion.models.vit import HybridViTConfig, HybridViTForImageClassification

    config = HybridViTConfig(
        image_size=cfg.image_size,
        num_channels=3,
        stem_width=cfg.stem_width,
        stage_channels=list(cfg.stage_channels),
        stage_blocks=list(cfg.stage_blocks),
        stage_strides=list(cfg.stage_strides),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate_size,
        layer_norm_eps=1e-6,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    # Read by emotion.backends.local: faces are reduced to what the model was trained on
    # (48x48 greyscale) before the image processor normalises them, and each face is
    # averaged with its mirror image, as PublicTest was scored during training.
    config.emotion_preprocess = {"grayscale": True, "source_size": 48, "flip_average": True}
    return HybridViTForImageClassification(config)


class Teacher(nn.Module):
    """A ResNet-18 for 48x48 faces: 3x3 stride-1 stem, no max-pool, four stages of two blocks."""

    def __init__(self, width: int = 64):
        super().__init__()
        from emotion.models.vit import BasicBlock

        layers = [nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        for i, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [BasicBlock(channels, out, 1 if i == 0 else 2), BasicBlock(out, out, 1)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, len(LABELS))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).mean((2, 3)))


def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    out = model(pixel_values=x)
    return out if isinstance(out, torch.Tensor) else out.logits


def build_processor(cfg: TrainConfig):
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_resize=True,
        size={"height": cfg.image_size, "width": cfg.image_size},
        resample=2,  # bilinear, as F.interpolate in training
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def to_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (b, 48, 48) -> normalised (b, 3, size, size), as the image processor does."""
    x = images.float().unsqueeze(1) / 255
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1)


def augment(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random affine (scale, rotation, shift, flip), brightness/contrast and erasing, batched."""
    b, dev = images.shape[0], images.device

    def rand(lo, hi):
        return torch.rand(b, generator=gen, device=dev) * (hi - lo) + lo

    angle = rand(-15, 15) * math.pi / 180
    scale = rand(0.85, 1.15)
    flip = torch.where(torch.rand(b, generator=gen, device=dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, rand(-0.1, 0.1)], 1),
            torch.stack([sin * flip, cos, rand(-0.1, 0.1)], 1),
        ],
        1,
    )
    x = images.float().unsqueeze(1) / 255
    grid = F.affine_grid(theta, (b, 1, size, size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = x.mean((2, 3), keepdim=True)
    x = ((x - mean) * rand(0.7, 1.3).view(b, 1, 1, 1) + mean + rand(-0.15, 0.15).view(b, 1, 1, 1)).clamp(0, 1)
    x = (x - 0.5) / 0.5
    # Random erasing of one rectangle (a quarter of the images), so no single region decides.
    erase = torch.rand(b, generator=gen, device=dev) < 0.25
    x = x.masked_fill((_boxes(b, size, rand) & erase.view(b, 1, 1)).unsqueeze(1), 0.0)
    return x.expand(-1, 3, -1, -1)


def _boxes(b: int, size: int, rand) -> torch.Tensor:
    """(b, size, size) masks of one random rectangle each, sides 15-40% of the image."""
    h = (rand(0.15, 0.4) * size).long()
    w = (rand(0.15, 0.4) * size).long()
    y0 = (rand(0, 1) * (size - h)).long()
    x0 = (rand(0, 1) * (size - w)).long()
    dev = h.device
    ys = torch.arange(size, device=dev).view(1, size, 1)
    xs = torch.arange(size, device=dev).view(1, 1, size)
    return (
        (ys >= y0.view(b, 1, 1))
        & (ys < (y0 + h).view(b, 1, 1))
        & (xs >= x0.view(b, 1, 1))
        & (xs < (x0 + w).view(b, 1, 1))
    )


def mix(x: torch.Tensor, target: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (a coin flip) of the batch with itself reversed; targets mixed by the same share.

    The random draws come from a CPU generator, so the GPU never waits for them.
    """
    size = x.shape[-1]
    if rng.random() < 0.5:
        lam = float(rng.beta(0.4, 0.4))
        mixed = lam * x + (1 - lam) * x.flip(0)
    else:
        h, w = (int(size * rng.uniform(0.3, 0.7)) for _ in range(2))
        y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        mixed = x.clone()
        mixed[..., y0 : y0 + h, x0 : x0 + w] = x.flip(0)[..., y0 : y0 + h, x0 : x0 + w]
        lam = 1 - h * w / size**2
    return mixed, lam * target + (1 - lam) * target.flip(0)


def soft_targets(labels: torch.Tensor, ferplus: torch.Tensor, ferplus_weight: float, smoothing: float) -> torch.Tensor:
    onehot = F.one_hot(labels, len(LABELS)).float()
    has_votes = ferplus.sum(1, keepdim=True) > 0
    target = torch.where(has_votes, (1 - ferplus_weight) * onehot + ferplus_weight * ferplus, onehot)
    return target * (1 - smoothing) + smoothing / len(LABELS)


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, size: int, batch_size: int = 1024) -> torch.Tensor:
    """(n, 2, 7) fp32 logits of each image and of its mirror image."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i : i + batch_size], size).contiguous(memory_format=torch.channels_last)
        with _autocast(x.device):
            pair = torch.stack([logits_of(model, x), logits_of(model, x.flip(3))], 1)
        out.append(pair.float())
    return torch.cat(out)


def _autocast(device: torch.device):
    # bf16 on the GPU (H100: tensor cores); fp32 on the CPU, where the smoke runs happen.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def save_state(path: Path, model, opt, info: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors")
    opt_tensors = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                opt_tensors[f"{names[id(p)]}::{key}"] = torch.as_tensor(value).contiguous()
    save_file(opt_tensors, path / "optimizer.safetensors")
    (path / "state.json").write_text(json.dumps(info, indent=1))


def load_state(path: Path, model, opt) -> dict:
    model.load_state_dict(load_file(path / "model.safetensors"))
    saved = load_file(path / "optimizer.safetensors")
    for name, p in model.named_parameters():
        state = {k.split("::")[1]: v for k, v in saved.items() if k.split("::")[0] == name}
        if state:
            opt.state[p] = state
    return json.loads((path / "state.json").read_text())


def write_model(model, cfg: TrainConfig, metrics: dict, command: str, temperature: float) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # Read by emotion.backends.local: logits are divided by it before the softmax.
    model.config.emotion_calibration = {"temperature": temperature, "fitted_on": "FER-2013 PublicTest"}
    # fp16 storage keeps the file well under 10 MB; the loader picks the compute dtype.
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.float()
    build_processor(cfg).save_pretrained(out)
    metrics = {**metrics, "command": command, "train_config": asdict(cfg)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log.info("wrote %s", out)


def split_metrics(logits: torch.Tensor, split: fer.Split, temperature: float = 1.0) -> dict:
    probs = view_probs(logits.cpu(), temperature).numpy()
    correct = probs.argmax(1) == split.labels
    keep = ~split.duplicate
    return {
        "accuracy": float(correct.mean()),
        "accuracy_without_duplicates": float(correct[keep].mean()) if keep.any() else float("nan"),
        "ece": ece(probs, split.labels),
        "n": int(len(correct)),
        "n_without_duplicates": int(keep.sum()),
    }


class Data:
    """Both splits as uint8 tensors on the training device, decoded once."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        pack_path = Path(cfg.pack)
        if not pack_path.exists():
            fer.pack(Path(cfg.data), pack_path)
        self.train = fer.load(pack_path, "train", cfg.limit)
        self.val = fer.load(pack_path, "publictest", cfg.limit)
        self.images = torch.from_numpy(self.train.images).to(device)
        self.labels = torch.from_numpy(self.train.labels).to(device)
        self.ferplus = torch.from_numpy(self.train.ferplus).to(device)
        self.val_images = torch.from_numpy(self.val.images).to(device)
        log.info("train %d images, PublicTest %d, device %s", len(self.labels), len(self.val.labels), device)


def run_phase(
    name: str,
    model: nn.Module,
    data: Data,
    cfg: TrainConfig,
    device: torch.device,
    *,
    epochs: int,
    seed: int,
    ferplus_weight: float,
    mix_prob: float,
    teachers: list[nn.Module] = (),
) -> dict:
    """Train one model with AdamW, warmup and cosine decay; resumable; keeps the best PublicTest epoch."""
    state_dir = Path(cfg.state) / name
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    steps_per_epoch = max(1, len(data.labels) // cfg.batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = min(cfg.warmup_epochs, epochs) * steps_per_epoch

    def lr_at(step):
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    info = {"epoch": 0, "best_accuracy": -1.0, "history": []}
    if (state_dir / "state.json").exists():
        info = load_state(state_dir, model, opt)
        log.info("%s: resumed after epoch %d", name, info["epoch"])
    gen = torch.Generator(device=device).manual_seed(seed * 1000 + info["epoch"])
    rng = np.random.default_rng(seed * 1000 + info["epoch"])
    for epoch in range(info["epoch"], epochs):
        model.train()
        start, seen, loss_sum = time.time(), 0, torch.zeros((), device=device)
        order = torch.randperm(len(data.labels), generator=gen, device=device)
        for i in range(steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch * steps_per_epoch + i)
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = augment(data.images[idx], cfg.image_size, gen)
            target = soft_targets(data.labels[idx], data.ferplus[idx], ferplus_weight, cfg.label_smoothing)
            if mix_prob and rng.random() < mix_prob:
                x, target = mix(x, target, rng)
            x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                logits = logits_of(model, x).float()
                loss = torch.sum(-target * logits.log_softmax(-1), 1).mean()
                if teachers:
                    with torch.no_grad():
                        t = cfg.kd_temperature
                        teacher = torch.stack([logits_of(m, x).float().div(t).softmax(-1) for m in teachers]).mean(0)
                    kd = F.kl_div((logits / t).log_softmax(-1), teacher, reduction="batchmean") * t * t
                    loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        val = split_metrics(predict_logits(model, data.val_images, cfg.image_size), data.val)
        record = {"epoch": epoch + 1, "loss": loss_sum.item() / seen, "seconds": time.time() - start, **val}
        info["history"].append(record)
        log.info(
            "%s epoch %d/%d loss %.4f PublicTest acc %.4f (%.1fs)",
            name,
            epoch + 1,
            epochs,
            record["loss"],
            val["accuracy"],
            record["seconds"],
        )
        if val["accuracy"] > info["best_accuracy"]:
            info["best_accuracy"] = val["accuracy"]
            info["best_epoch"] = epoch + 1
            state_dir.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, state_dir / "best.safetensors")
        info["epoch"] = epoch + 1
        info["config"] = asdict(cfg)
        save_state(state_dir, model, opt, info)
    model.load_state_dict(load_file(state_dir / "best.safetensors", device=str(device)))
    model.eval()
    return info


def train_teachers_in_parallel(cfg: TrainConfig, command: str) -> None:
    """One process per teacher, all on this GPU; each resumes from its own state folder."""
    import subprocess

    args = shlex.split(command)[3:]  # the arguments after "python -m emotion.training"
    procs = [
        subprocess.Popen([sys.executable, "-m", "emotion.training", *args, "--only-teacher", str(k)])
        for k in range(cfg.teachers)
    ]
    failed = [k for k, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise RuntimeError(f"teacher process(es) {failed} failed; rerun the same command to resume")


def train(cfg: TrainConfig, command: str = "") -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    torch.backends.cudnn.benchmark = True
    started = time.time()
    data = Data(cfg, device)

    if cfg.parallel_teachers and cfg.only_teacher < 0 and device.type == "cuda" and cfg.teachers > 1:
        train_teachers_in_parallel(cfg, command)
    teachers, teacher_reports = [], []
    for k in range(cfg.teachers):
        if cfg.only_teacher >= 0 and k != cfg.only_teacher:
            continue
        ferplus_weight, mix_prob = TEACHER_RECIPES[k % len(TEACHER_RECIPES)]
        torch.manual_seed(cfg.seed + 100 + k)
        teacher = Teacher(cfg.teacher_width).to(device, memory_format=torch.channels_last)
        info = run_phase(
            f"teacher{k}",
            teacher,
            data,
            cfg,
            device,
            epochs=cfg.teacher_epochs,
            seed=cfg.seed + 100 + k,
            ferplus_weight=ferplus_weight,
            mix_prob=mix_prob,
        )
        teachers.append(teacher.requires_grad_(False))
        teacher_reports.append(
            {
                "ferplus_weight": ferplus_weight,
                "mix_prob": mix_prob,
                "selected_epoch": info["best_epoch"],
                "publictest_accuracy": info["best_accuracy"],
            }
        )
    if cfg.only_teacher >= 0:
        return {"teachers": teacher_reports}
    if teachers:
        votes = torch.stack([predict_logits(t, data.val_images, cfg.image_size) for t in teachers])
        ensemble = split_metrics(votes.softmax(-1).mean(0).log(), data.val)
        log.info("teacher ensemble: PublicTest acc %.4f", ensemble["accuracy"])
    else:
        ensemble = None

    if cfg.init:
        from emotion.models.vit import HybridViTForImageClassification

        # The folder's own architecture and weights (from_pretrained maps the saved key names).
        model = HybridViTForImageClassification.from_pretrained(cfg.init, use_safetensors=True, dtype=torch.float32)
        log.info("starting from the model in %s", cfg.init)
    else:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg)
    model = model.to(device, memory_format=torch.channels_last)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("student: %.2fM parameters", parameters / 1e6)
    info = run_phase(
        "student",
        model,
        data,
        cfg,
        device,
        epochs=cfg.epochs,
        seed=cfg.seed,
        ferplus_weight=cfg.ferplus_weight,
        mix_prob=cfg.mix_prob,
        teachers=teachers,
    )
    val_logits = predict_logits(model, data.val_images, cfg.image_size).cpu()
    temperature = fit_temperature(val_logits, torch.from_numpy(data.val.labels))
    uncalibrated = split_metrics(val_logits, data.val)
    calibrated = split_metrics(val_logits, data.val, temperature)
    log.info(
        "student epoch %d: PublicTest acc %.4f; temperature %.2f: ECE %.4f -> %.4f",
        info["best_epoch"],
        calibrated["accuracy"],
        temperature,
        uncalibrated["ece"],
        calibrated["ece"],
    )
    metrics = {
        "selected_epoch": info["best_epoch"],
        "publictest": calibrated,
        "temperature": temperature,
        "ece_before_temperature": uncalibrated["ece"],
        "teachers": teacher_reports,
        "teacher_ensemble_publictest": ensemble,
        "history": info["history"],
        "parameters": parameters,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else str(device),
        "wall_seconds": time.time() - started,
    }
    write_model(model.cpu(), cfg, metrics, command, temperature)
    return metrics


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainConfig):
        if f.type == "list[int]":
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=int, nargs="+", default=f.default_factory())
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = parse_args(argv)
    command = "python -m emotion.training " + shlex.join(sys.argv[1:] if argv is None else argv)
    # oneDNN's CPU convolution backward (torch 2.14.1) was seen to hang or crash on this project's AMD EPYC
    # machines, depending on the host; torch's own CPU kernels train correctly. Inference keeps oneDNN.
    with torch.backends.mkldnn.flags(enabled=torch.cuda.is_available() and cfg.device != "cpu"):
        metrics = train(cfg, command)
    log.info(
        "selected epoch %d: PublicTest accuracy %.4f", metrics["selected_epoch"], metrics["publictest"]["accuracy"]
    )


if __name__ == "__main__":
    main()
