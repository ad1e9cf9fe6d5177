"""Tiny, randomly initialised models with the real architectures, built offline.

They exist so that the offline preset and the test suite exercise the exact
loading code real checkpoints go through (`from_pretrained` on a folder) without
downloading anything. Every builder seeds torch before creating weights, so two
builds on the same machine are bit-identical; the pictures and scores they produce
are meaningless by design.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TINY_TEXT_HIDDEN_SIZE = 32
"""Width of the tiny CLIP text encoder, shared by the diffusion model and the judge."""

TINY_VISION_TOWER: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}
"""The ViT of every tiny image model (CLIP, BLIP-2, the safety checker): 32x32-pixel
images in 16 patches."""


def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for raw bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codepoints.append(256 + extra)
            extra += 1
    return [chr(c) for c in codepoints]


def tiny_clip_vocabulary() -> dict[str, int]:
    """Vocabulary of a character-level CLIP tokenizer.

    With no BPE merges, CLIP's tokenizer falls back to one token per character
    (plus the end-of-word variant), which is enough to tokenize any text. The
    special tokens get the highest ids, as in the real CLIP vocabulary.
    """
    alphabet = _byte_level_alphabet()
    tokens = alphabet + [char + "</w>" for char in alphabet]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_clip_vocabulary(), merges=[], model_max_length=77)


def clip_text_config(tokenizer, projection_dim: int = 16, **size: Any):
    """A CLIP text tower's config: tiny by default; `size` overrides the widths and
    depths (the full-size towers of `CLIP_TEXT_SIZES`)."""
    from transformers import CLIPTextConfig

    widths = {
        "hidden_size": TINY_TEXT_HIDDEN_SIZE,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        **size,
    }
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **widths,
    )


CLIP_TEXT_SIZES: dict[str, dict[str, Any]] = {
    "vit-l14": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "hidden_act": "quick_gelu",
    },
    "vit-bigg14": {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "hidden_act": "gelu",
    },
}
"""Full-size CLIP text towers: SD 1.x's (and SDXL's first), and SDXL's OpenCLIP bigG."""


def kl_autoencoder(
    sample_size: int,
    block_out_channels: tuple[int, ...] = (32, 64),
    *,
    latent_channels: int = 4,
    scaling_factor: float = 0.18215,
    shift_factor: float | None = None,
    use_quant_conv: bool = True,
    **size: Any,
) -> Any:
    """A KL autoencoder; each block after the first halves the resolution (two
    blocks: 2x, four blocks: 8x as in real Stable Diffusion).

    The defaults are Stable Diffusion 1.x/XL's (4 latent channels, scaled by
    0.18215, quantization convolutions); SD3 and FLUX use 16 latent channels, a
    shift as well as a scale, and no quantization convolutions.
    """
    from diffusers import AutoencoderKL

    blocks = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=block_out_channels,
        latent_channels=latent_channels,
        norm_num_groups=size.pop("norm_num_groups", min(block_out_channels)),
        sample_size=sample_size,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=use_quant_conv,
        use_post_quant_conv=use_quant_conv,
        **size,
    )


def tiny_t5_tokenizer(texts: list[str] | None = None, max_length: int = 300) -> Any:
    """A character-level T5 (Unigram) tokenizer: tokenizes any ASCII text, offline.

    With `texts`, every word of them is also one piece (with and without the leading
    space marker), which beats any spelling of it in characters: the benchmarks' prompts
    and questions are then about as long in tokens as with flan-T5's vocabulary."""
    import string

    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(char, -3.0) for char in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("▁" + char, -2.5) for char in string.ascii_letters + string.digits]
    words = sorted({word for text in texts or [] for word in re.findall(r"[A-Za-z]+", text)})
    words = [word for word in words if len(word) > 1]
    pieces += [("▁" + word, -1.0) for word in words]
    pieces += [(word, -1.5) for word in words]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def _tiny_t5_config(tokenizer: Any, d_model: int = TINY_TEXT_HIDDEN_SIZE) -> Any:
    from transformers import T5Config

    return T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _tiny_t5_encoder(tokenizer: Any, seed: int, d_model: int = TINY_TEXT_HIDDEN_SIZE) -> Any:
    from transformers import T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(_tiny_t5_config(tokenizer, d_model))


SD15_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "unet": {
            "sample_size": 16,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": TINY_TEXT_HIDDEN_SIZE,
            "attention_head_dim": (2, 4),
        },
        "vae": {"sample_size": 32},
        "text": {},
    },
    "full": {
        "unet": {
            "sample_size": 64,
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
        },
        "vae": {
            "norm_num_groups": 32,
            "sample_size": 512,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "force_upcast": True,
        },
        "text": {"projection_dim": 768, **CLIP_TEXT_SIZES["vit-l14"]},
    },
}
"""Stable Diffusion 1.x: the tiny test model (32x32 images) and the real architecture
(512x512), the latter for benchmarks with random weights."""


def build_stable_diffusion(
    directory: Path, seed: int = 0, size: str = "tiny", dtype: torch.dtype | None = None
) -> Path:
    """Save a Stable-Diffusion-1.x-shaped pipeline (UNet, VAE, CLIP text encoder,
    tokenizer, PNDM scheduler) with random weights to `directory`, at `size` (see
    `SD15_SIZES`). Tiny: the UNet works on 16x16 latents and the VAE halves the
    resolution once, so images are 32x32 pixels.
    """
    from diffusers import (
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    sizes = SD15_SIZES[size]
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, norm_num_groups=32, **sizes["unet"])
    torch.manual_seed(seed + 1)
    vae = kl_autoencoder(**sizes["vae"])
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, **sizes["text"]))
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipeline: Any = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _save(pipeline, directory, dtype)
    return directory


def _save(pipeline: Any, directory: Path, dtype: torch.dtype | None) -> None:
    if dtype is not None:
        pipeline.to(dtype=dtype)
    # Small shards keep the extra host memory of serialisation low at full size.
    pipeline.save_pretrained(directory, max_shard_size="2GB")


CLIP_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"vision": TINY_VISION_TOWER, "text": {}, "projection_dim": 16, "image_size": 32},
    "vit-b16": {
        # openai/clip-vit-base-patch16, the paper's CLIP judge.
        "vision": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 16,
            "hidden_act": "quick_gelu",
        },
        "text": {
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "hidden_act": "quick_gelu",
        },
        "projection_dim": 512,
        "image_size": 224,
    },
    "vit-l14": {
        # openai/clip-vit-large-patch14, the aesthetic judge's backbone.
        "vision": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "hidden_act": "quick_gelu",
        },
        "text": CLIP_TEXT_SIZES["vit-l14"],
        "projection_dim": 768,
        "image_size": 224,
    },
}
"""CLIP judges by size: the tiny test model and OpenAI's ViT-B/16 and ViT-L/14 (their
architectures, for benchmarks; the test tokenizer stands in for the real vocabulary)."""


def build_clip(
    directory: Path, seed: int = 7, projection_dim: int | None = None, size: str = "tiny"
) -> Path:
    """Save a CLIP model (text + vision towers) with random weights and its processor
    (CLIP's resize-shortest-edge, center-crop recipe) to `directory`, at `size`.

    Tiny: the vision tower takes 32x32 images in 8x8 patches; `projection_dim` sets
    the width of the shared embedding space (768 matches CLIP ViT-L/14, which heads
    such as the LAION aesthetic predictor read). The default seed is one
    whose random towers give mostly positive cosine similarities on the tiny
    diffusion model's images (most seeds give negative ones, which CLIP score
    clips to 0), so the offline preset's scores vary and its pairs are not ties.
    """
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        CLIPVisionConfig,
    )

    sizes = CLIP_SIZES[size]
    width = projection_dim or sizes["projection_dim"]
    tokenizer = tiny_clip_tokenizer()
    vision_config = CLIPVisionConfig(**sizes["vision"], projection_dim=width)
    config = CLIPConfig(
        text_config=clip_text_config(tokenizer, width, **sizes["text"]).to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=width,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    pixels = sizes["image_size"]
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": pixels}, crop_size={"height": pixels, "width": pixels}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


SDXL_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "unet": {
            "sample_size": 32,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "attention_head_dim": (2, 4),
            "transformer_layers_per_block": (1, 2),
            # Both encoders' hidden states side by side; pooled embedding + 6 time ids.
            "cross_attention_dim": 2 * TINY_TEXT_HIDDEN_SIZE,
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": TINY_TEXT_HIDDEN_SIZE + 6 * 8,
        },
        "vae": {"sample_size": 64},
        "text": {"projection_dim": TINY_TEXT_HIDDEN_SIZE},
        "text_2": {"projection_dim": TINY_TEXT_HIDDEN_SIZE},
    },
    "full": {
        "unet": {
            "sample_size": 128,
            "block_out_channels": (320, 640, 1280),
            "layers_per_block": 2,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "attention_head_dim": (5, 10, 20),
            "transformer_layers_per_block": (1, 2, 10),
            # 768 + 1280; pooled embedding (1280) + six size/crop ids of 256 each.
            "cross_attention_dim": 2048,
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
        "vae": {
            "norm_num_groups": 32,
            "sample_size": 1024,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "scaling_factor": 0.13025,
            "force_upcast": True,
        },
        "text": {"projection_dim": 768, **CLIP_TEXT_SIZES["vit-l14"]},
        "text_2": {"projection_dim": 1280, **CLIP_TEXT_SIZES["vit-bigg14"]},
    },
}
"""SDXL base: the tiny test model (64x64 images) and the real architecture (1024x1024)."""


def build_stable_diffusion_xl(
    directory: Path, seed: int = 0, size: str = "tiny", dtype: torch.dtype | None = None
) -> Path:
    """Save an SDXL-shaped pipeline (UNet with text-time conditioning, two CLIP text
    encoders, the second with a projection for the pooled embedding, two tokenizers,
    Euler scheduler) with random weights to `directory`, at `size` (see `SDXL_SIZES`).
    """
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    sizes = SDXL_SIZES[size]
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        norm_num_groups=32,
        **sizes["unet"],
    )
    torch.manual_seed(seed + 1)
    vae = kl_autoencoder(**sizes["vae"])
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, **sizes["text"]))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer, **sizes["text_2"]))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipeline: Any = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tiny_clip_tokenizer(),
        scheduler=scheduler,
    )
    _save(pipeline, directory, dtype)
    return directory


def build_tiny_pixart_sigma(directory: Path, seed: int = 0) -> Path:
    """Save a PixArt-Sigma-shaped pipeline (DiT transformer, T5 text encoder, VAE,
    DPM-Solver) with random weights to `directory`: a pipeline family with a T5
    encoder and attention masks. Images are 256x256 pixels, the smallest size its
    resolution binning supports.
    """
    from diffusers import (
        DPMSolverMultistepScheduler,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=32,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=TINY_TEXT_HIDDEN_SIZE,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    torch.manual_seed(seed + 1)
    vae = kl_autoencoder(sample_size=256, block_out_channels=(16, 16, 16, 16))
    pipeline: Any = PixArtSigmaPipeline(
        tokenizer=tokenizer,
        text_encoder=_tiny_t5_encoder(tokenizer, seed + 2),
        vae=vae,
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )
    pipeline.save_pretrained(directory)
    return directory


def build_tiny_stable_diffusion_3(directory: Path, seed: int = 0) -> Path:
    """Save a Stable-Diffusion-3-shaped pipeline (MMDiT transformer, two CLIP text
    encoders with projections, a T5 encoder, three tokenizers, 16-channel VAE with
    shift and scale, flow-matching Euler scheduler) with random weights to `directory`.

    As in SD3, the two CLIP hidden states are joined along the features and padded
    to the T5 width (here exactly twice the CLIP width, so no padding), then put in
    front of the T5 tokens; the pooled embedding is both CLIP projections side by
    side. The transformer works on 16x16 latents and the VAE halves the
    resolution once, so images are 32x32 pixels.
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    text_config = clip_text_config(tokenizer, projection_dim=TINY_TEXT_HIDDEN_SIZE)
    t5_tokenizer = tiny_t5_tokenizer()
    latent_channels = 16
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=2 * TINY_TEXT_HIDDEN_SIZE,
        # The projected text tokens join the image tokens, so this is heads x head dim.
        caption_projection_dim=4 * 8,
        pooled_projection_dim=2 * TINY_TEXT_HIDDEN_SIZE,
        pos_embed_max_size=32,
    )
    torch.manual_seed(seed + 1)
    vae = kl_autoencoder(
        sample_size=32,
        latent_channels=latent_channels,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModelWithProjection(text_config)
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    pipeline: Any = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=_tiny_t5_encoder(t5_tokenizer, seed + 4, d_model=2 * TINY_TEXT_HIDDEN_SIZE),
        tokenizer_3=t5_tokenizer,
    )
    pipeline.save_pretrained(directory)
    return directory


def build_tiny_flux(directory: Path, seed: int = 0) -> Path:
    """Save a FLUX.1-dev-shaped pipeline (guidance-embedding MMDiT transformer with
    double- and single-stream blocks, CLIP text encoder for the pooled embedding,
    T5 encoder for the token embeddings, two tokenizers, 16-channel VAE with shift
    and scale, flow-matching Euler scheduler with resolution-dependent shift) with
    random weights to `directory`.

    FLUX packs 2x2 latent patches into tokens, so the transformer takes 4x the
    latent channels. The pipeline's default size is fixed at 128x128 latents; the
    VAE halves the resolution once, so images are 256x256 pixels by default (any
    multiple of 4 pixels works).
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    t5_tokenizer = tiny_t5_tokenizer()
    latent_channels = 16
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_TEXT_HIDDEN_SIZE,
        pooled_projection_dim=TINY_TEXT_HIDDEN_SIZE,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(seed + 1)
    vae = kl_autoencoder(
        sample_size=32,
        latent_channels=latent_channels,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip_text_config(tokenizer))
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )
    pipeline: Any = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=_tiny_t5_encoder(t5_tokenizer, seed + 3),
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipeline.save_pretrained(directory)
    return directory


FLAN_T5_VOCAB_SIZE = 32_128

BLIP2_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_query_tokens": 4,
        "image_processor": {"size": {"height": 32, "width": 32}},
        "vision": TINY_VISION_TOWER,
        "qformer": {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "encoder_hidden_size": 32,
        },
        "text": None,  # the tiny T5 of the other tiny models
    },
    "flan-t5-xl": {
        "num_query_tokens": 32,
        # 224 px, bicubic, CLIP's normalisation (OPENAI_CLIP_MEAN / _STD).
        "image_processor": {
            "size": {"height": 224, "width": 224},
            "resample": 3,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_convert_rgb": True,
        },
        # EVA ViT-g/14 without its last layer, as BLIP-2 uses it: 257 tokens of width 1408.
        "vision": {
            "hidden_size": 1408,
            "intermediate_size": 6144,
            "num_hidden_layers": 39,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "qkv_bias": True,
            "layer_norm_eps": 1e-6,
        },
        "qformer": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "cross_attention_frequency": 2,
            "encoder_hidden_size": 1408,
        },
        # flan-t5-xl: 24 + 24 layers, gated-GELU feed-forward; T5 v1.1's untied head,
        # which transformers reads as "no output scaling".
        "text": {
            "vocab_size": FLAN_T5_VOCAB_SIZE,
            "d_model": 2048,
            "d_ff": 5120,
            "d_kv": 64,
            "num_layers": 24,
            "num_decoder_layers": 24,
            "num_heads": 32,
            "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 32,
            "layer_norm_epsilon": 1e-6,
            "tie_word_embeddings": False,
        },
    },
}
"""Configurations of `build_blip2`: tiny for tests and the offline preset,
`flan-t5-xl` (`Salesforce/blip2-flan-t5-xl`'s architecture) for the benchmarks."""


def build_blip2(
    directory: Path,
    seed: int = 0,
    size: str = "tiny",
    dtype: torch.dtype | None = None,
    tokenizer: Any = None,
) -> Path:
    """Save a BLIP-2-shaped VQA model (ViT, Q-Former, flan-T5-style encoder-decoder)
    with random weights and its processor to `directory`, as the paper's
    `Salesforce/blip2-flan-t5-xxl` is laid out, at `size` (see `BLIP2_SIZES`; tiny
    images are 32x32 pixels). `tokenizer` defaults to `tiny_t5_tokenizer()`.
    """
    import gc

    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        T5Config,
    )

    sizes = BLIP2_SIZES[size]
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(**sizes["image_processor"]),
        tokenizer=tokenizer if tokenizer is not None else tiny_t5_tokenizer(),
        num_query_tokens=sizes["num_query_tokens"],
    )
    tokenizer = processor.tokenizer
    if sizes["text"] is None:
        text_config = _tiny_t5_config(tokenizer)
    else:
        special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
        text_config = T5Config(**sizes["text"], **special)
    # T5 starts decoding from its pad token, as flan-T5 checkpoints record.
    text_config.decoder_start_token_id = tokenizer.pad_token_id
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**sizes["vision"]).to_dict(),
        qformer_config=Blip2QFormerConfig(**sizes["qformer"], vocab_size=len(tokenizer)).to_dict(),
        text_config=text_config.to_dict(),
        num_query_tokens=sizes["num_query_tokens"],
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model: Any = Blip2ForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = tokenizer.pad_token_id
    if dtype is not None:
        model.to(dtype=dtype)
    # Small shards keep the extra host memory of serialisation low at full size.
    model.save_pretrained(directory, max_shard_size="2GB")
    processor.save_pretrained(directory)
    del model
    gc.collect()
    return directory


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """Save a BERT-shaped sentence encoder (the BGE architecture) and a character-level
    WordPiece tokenizer to `directory`."""
    import string

    from transformers import BertConfig, BertModel, BertTokenizer

    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = string.ascii_lowercase + string.digits + string.punctuation
    pieces += list(characters) + ["##" + char for char in characters]
    tokenizer = BertTokenizer(vocab={piece: index for index, piece in enumerate(pieces)})
    torch.manual_seed(seed)
    model = BertModel(
        BertConfig(
            vocab_size=len(pieces),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=512,
        )
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


TINY_MODEL_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "stable-diffusion": build_stable_diffusion,
    "stable-diffusion-xl": build_stable_diffusion_xl,
    "pixart-sigma": build_tiny_pixart_sigma,
    "stable-diffusion-3": build_tiny_stable_diffusion_3,
    "flux": build_tiny_flux,
    "clip": build_clip,
    "blip2": build_blip2,
    "bert": build_tiny_bert,
    "clip-vit-large": lambda directory: build_clip(directory, projection_dim=768),
}
"""Tiny models addressable as `tiny:<name>` wherever a model id is accepted."""
