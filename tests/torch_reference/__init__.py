"""Independent PyTorch reference of GR-1 in the official state_dict layout (parity-test oracle).

Plain ``torch.nn`` only; no transformers / flamingo-pytorch / CLIP imports.  See
``gr1_torch.py`` for the model and ``losses_numpy.py`` for the loss oracle.
"""
from .gr1_torch import (  # noqa: F401
    RefConfig,
    GR1Reference,
    GPT2Trunk,
    PerceiverResamplerRef,
    MAEViT,
    CLIPText,
    ViTBlock,
    sincos_2d_column_first,
    random_init_,
    count_params,
)
from .losses_numpy import official_losses_numpy  # noqa: F401
