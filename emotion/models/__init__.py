"""Model architectures of this project (the hybrid ViT) and, in bundled/, the shipped weights."""
