"""Train the bundled emotion ViT (a hybrid ViT: convolutional patch embedding + transformer encoder) on FER-2013.

    python -m emotion.train --out emotion/model          # the bundled model's first run (see README)

Trains from scratch on the Training split only, selects the epoch on PublicTest,
and writes a standard Hugging Face folder (config.json, model.safetensors in
fp16, preprocessor_config.json) plus metrics.json with the command that made it.
The run is resumable: state is kept in ``--state`` after every epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from emotion import fer
from emotion.labels import LABELS

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str = "../shared/data/fer2013"  # FER-2013 folder with labels.csv
    pack: str = ".cache/fer2013.npz"  # packed JPEGs, made from `data` if missing
    out: str = "emotion/model"  # where the Hugging Face model folder is written
    state: str = ".cache/train_state"  # resumable checkpoint (safetensors + json)
    epochs: int = 24
    batch_size: int = 128
    lr: float = 1e-3  # AdamW peak learning rate, cosine decay after warmup
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    ferplus_weight: float = 0.3  # share of the target taken from FER+ votes (cleaner labels)
    label_smoothing: float = 0.05
    image_size: int = 48  # FER-2013's own size; the stem leaves a 6x6 token grid
    stem_channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # one conv + pool each
    hidden_size: int = 192  # transformer width (ViT-Tiny's)
    layers: int = 4  # transformer encoder layers
    heads: int = 3
    intermediate_size: int = 384
    init: str = ""  # start from this model folder (architecture and weights) instead of random weights
    limit: int = 0  # use only the first n Training/PublicTest images (smoke runs)
    seed: int = 0
    threads: int = 0  # CPU threads; 0 keeps torch's default
    device: str = "auto"


def build_model(cfg: TrainConfig):
    from emotion.vit import HybridViTConfig, HybridViTForImageClassification

    config = HybridViTConfig(
        image_size=cfg.image_size,
        num_channels=3,
        stem_channels=list(cfg.stem_channels),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate_size,
        layer_norm_eps=1e-6,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    # Read by emotion.classify: faces are reduced to what the model was trained on
    # (48x48 greyscale) before the image processor normalises them, and each face is
    # averaged with its mirror image, as PublicTest was scored during training.
    config.emotion_preprocess = {"grayscale": True, "source_size": 48, "flip_average": True}
    return HybridViTForImageClassification(config)


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
    h = (rand(0.15, 0.4) * size).long()
    w = (rand(0.15, 0.4) * size).long()
    y0 = (rand(0, 1) * (size - h)).long()
    x0 = (rand(0, 1) * (size - w)).long()
    ys = torch.arange(size, device=dev).view(1, size, 1)
    xs = torch.arange(size, device=dev).view(1, 1, size)
    box = (
        (ys >= y0.view(b, 1, 1))
        & (ys < (y0 + h).view(b, 1, 1))
        & (xs >= x0.view(b, 1, 1))
        & (xs < (x0 + w).view(b, 1, 1))
    )
    x = x.masked_fill((box & erase.view(b, 1, 1)).unsqueeze(1), 0.0)
    return x.expand(-1, 3, -1, -1)


def soft_targets(labels: torch.Tensor, ferplus: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    onehot = F.one_hot(labels, len(LABELS)).float()
    has_votes = ferplus.sum(1, keepdim=True) > 0
    target = torch.where(has_votes, (1 - cfg.ferplus_weight) * onehot + cfg.ferplus_weight * ferplus, onehot)
    return target * (1 - cfg.label_smoothing) + cfg.label_smoothing / len(LABELS)


@torch.no_grad()
def predict(model, images: torch.Tensor, size: int, batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities with a horizontal-flip test-time average."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i : i + batch_size], size)
        p = model(pixel_values=x).logits.float().softmax(-1)
        p = p + model(pixel_values=x.flip(3)).logits.float().softmax(-1)
        out.append(p / 2)
    return torch.cat(out)


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


def write_model(model, cfg: TrainConfig, best_state: dict, metrics: dict, command: str) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.load_state_dict(best_state)
    # fp16 storage keeps the file well under 10 MB; the loader picks the compute dtype.
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.float()
    build_processor(cfg).save_pretrained(out)
    metrics = {**metrics, "command": command, "train_config": asdict(cfg)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log.info("wrote %s", out)


def evaluate_split(model, split: fer.Split, size: int, device) -> dict:
    probs = predict(model, torch.from_numpy(split.images).to(device), size).cpu()
    pred = probs.argmax(1).numpy()
    correct = pred == split.labels
    keep = ~split.duplicate
    return {
        "accuracy": float(correct.mean()),
        "accuracy_without_duplicates": float(correct[keep].mean()) if keep.any() else float("nan"),
        "n": int(len(correct)),
        "n_without_duplicates": int(keep.sum()),
    }


def train(cfg: TrainConfig, command: str = "") -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    pack_path = Path(cfg.pack)
    if not pack_path.exists():
        fer.pack(Path(cfg.data), pack_path)
    train_split = fer.load(pack_path, "train", cfg.limit)
    val_split = fer.load(pack_path, "publictest", cfg.limit)
    log.info("train %d images, PublicTest %d, device %s", len(train_split.labels), len(val_split.labels), device)

    images = torch.from_numpy(train_split.images).to(device)
    labels = torch.from_numpy(train_split.labels).to(device)
    ferplus = torch.from_numpy(train_split.ferplus).to(device)

    if cfg.init:
        from emotion.vit import HybridViTForImageClassification

        # The folder's own architecture and weights (from_pretrained maps the saved key names).
        model = HybridViTForImageClassification.from_pretrained(cfg.init, use_safetensors=True, dtype=torch.float32)
        log.info("starting from the model in %s", cfg.init)
    else:
        model = build_model(cfg)
    # channels-last makes the convolutional stem faster on CPU.
    model = model.to(device, memory_format=torch.channels_last)
    log.info("model: %.2fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "attention_biases" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "attention_biases" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    steps_per_epoch = max(1, len(labels) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch

    def lr_at(step):
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    state_dir = Path(cfg.state)
    info = {"epoch": 0, "best_accuracy": -1.0, "history": []}
    best_state = None
    if (state_dir / "state.json").exists():
        info = load_state(state_dir, model, opt)
        changed = {k for k, v in info.get("config", {}).items() if k != "epochs" and asdict(cfg).get(k) != v}
        if changed:
            log.warning("resuming with changed settings: %s", sorted(changed))
        best_state = load_file(state_dir / "best.safetensors") if (state_dir / "best.safetensors").exists() else None
        log.info("resumed after epoch %d", info["epoch"])

    gen = torch.Generator(device=device).manual_seed(cfg.seed + info["epoch"])
    for epoch in range(info["epoch"], cfg.epochs):
        model.train()
        start, seen, loss_sum = time.time(), 0, 0.0
        order = torch.randperm(len(labels), generator=gen, device=device)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = augment(images[idx], cfg.image_size, gen).contiguous(memory_format=torch.channels_last)
            logits = model(pixel_values=x).logits
            loss = torch.sum(-soft_targets(labels[idx], ferplus[idx], cfg) * logits.log_softmax(-1), 1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
        val = evaluate_split(model, val_split, cfg.image_size, device)
        record = {"epoch": epoch + 1, "loss": loss_sum / seen, "seconds": time.time() - start, **val}
        info["history"].append(record)
        log.info(
            "epoch %d/%d loss %.4f PublicTest acc %.4f (%.0fs)",
            epoch + 1,
            cfg.epochs,
            record["loss"],
            val["accuracy"],
            record["seconds"],
        )
        if val["accuracy"] > info["best_accuracy"]:
            info["best_accuracy"] = val["accuracy"]
            info["best_epoch"] = epoch + 1
            best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
            state_dir.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in best_state.items()}, state_dir / "best.safetensors")
        info["epoch"] = epoch + 1
        info["config"] = asdict(cfg)
        save_state(state_dir, model, opt, info)

    model = model.cpu()
    best = next(r for r in info["history"] if r["epoch"] == info["best_epoch"])
    metrics = {
        "selected_epoch": info["best_epoch"],
        "publictest": {k: best[k] for k in ("accuracy", "accuracy_without_duplicates", "n", "n_without_duplicates")},
        "history": info["history"],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    write_model(model, cfg, best_state, metrics, command)
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
    command = "python -m emotion.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    metrics = train(cfg, command)
    log.info(
        "selected epoch %d: PublicTest accuracy %.4f", metrics["selected_epoch"], metrics["publictest"]["accuracy"]
    )


if __name__ == "__main__":
    main()
