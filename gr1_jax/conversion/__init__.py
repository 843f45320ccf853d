"""Weight interop with the official PyTorch GR-1 (key layout in gr1.md §6)."""
