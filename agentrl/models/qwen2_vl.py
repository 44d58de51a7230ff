"""Qwen2-VL: dynamic-resolution images as patch grids, and 3-D rotary positions (mrope).

An image of h x w pixels (multiples of patch * merge) becomes (h/patch) * (w/patch) patches and
(h/patch/merge) * (w/patch/merge) image tokens. Text tokens take the next position on all three axes;
an image's tokens take (t, row, column) offsets from the position where the image starts, and the text
after it resumes at that start + max(rows, columns). The positions are computed over the whole
multi-turn sequence, so thumbnails that arrive in later turns get their own 3-D positions too.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agentrl.config import VisionConfig
from agentrl.images import MAX_IMAGE_PIXELS, MAX_THUMBNAIL_PIXELS
from agentrl.models.base import ImageError, ModelAdapter, decode_image, encode_png, image_size, register_adapter


@register_adapter
class Qwen2VLAdapter(ModelAdapter):
    model_types = ("qwen2_vl",)
    is_multimodal = True
    model_class = "Qwen2VLForConditionalGeneration"

    def __init__(self, model_path: str, vision: VisionConfig | None = None) -> None:
        super().__init__(model_path, vision)
        with open(os.path.join(model_path, "config.json")) as f:
            cfg = json.load(f)
        vc = cfg["vision_config"]
        self.image_token_id: int = cfg["image_token_id"]
        self.patch_size: int = vc.get("patch_size", 14)
        self.merge_size: int = vc.get("spatial_merge_size", 2)
        self._processor: Any = None

    @property
    def image_processor(self) -> Any:
        if self._processor is None:
            from transformers import AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.model_path).image_processor
            self._check_budgets()
        return self._processor

    def _check_budgets(self) -> None:
        """The processor (in vLLM and here) must keep our sizes as they are: budgets inside its range."""
        size = self._processor.size
        lo, hi = size.get("shortest_edge"), size.get("longest_edge")  # min / max pixels
        v = self.vision
        for key in ("input_min_pixels", "input_max_pixels", "thumbnail_min_pixels", "thumbnail_max_pixels"):
            value = getattr(v, key)
            if (lo and value < lo) or (hi and value > hi):
                raise ValueError(f"model.vision.{key}={value} is outside the range the model's image processor "
                                 f"keeps images in ({lo}..{hi} pixels)")

    # ---- loading -----------------------------------------------------------------------------------
    def load_model(self, dtype: Any) -> Any:
        import transformers

        return getattr(transformers, self.model_class).from_pretrained(self.model_path, dtype=dtype)

    def engine_kwargs(self) -> dict[str, Any]:
        return {"limit_mm_per_prompt": {"image": self.vision.max_images_per_trajectory}}

    # ---- images -----------------------------------------------------------------------------------
    def prepare_image(self, data: bytes, kind: str = "input") -> bytes:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        img = decode_image(data, MAX_IMAGE_PIXELS if kind == "input" else MAX_THUMBNAIL_PIXELS)
        v = self.vision
        lo, hi = ((v.input_min_pixels, v.input_max_pixels) if kind == "input"
                  else (v.thumbnail_min_pixels, v.thumbnail_max_pixels))
        w, h = img.size
        try:
            rh, rw = self.kept_by_processor(*smart_resize(h, w, factor=self.patch_size * self.merge_size,
                                                          min_pixels=lo, max_pixels=hi))
        except ValueError as e:  # a shape the processor refuses: an unusable image, as a corrupt one is
            raise ImageError(f"image of {w}x{h} pixels cannot be resized for the model ({e})") from None
        if (rw, rh) != (w, h):
            from PIL import Image

            img = img.resize((rw, rh), Image.Resampling.BICUBIC)
        return encode_png(img)

    def kept_by_processor(self, h: int, w: int) -> tuple[int, int]:
        """The nearest size the model's processor (vLLM's too) keeps as it is. A budget's resize of a
        non-square image can land under the processor's minimum (240x180 into 3,136 pixels gives 28x56);
        the processor would then enlarge it again and vLLM would count other image tokens than ours."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor, smart_resize

        try:
            size = self.image_processor.size
        except OSError:  # a folder without a processor (a bare model): the family's default range
            size = Qwen2VLImageProcessor().size
        lo, hi = size.get("shortest_edge") or 0, size.get("longest_edge") or 2**62
        for _ in range(4):
            nh, nw = smart_resize(h, w, factor=self.patch_size * self.merge_size, min_pixels=lo, max_pixels=hi)
            if (nh, nw) == (h, w):
                return h, w
            h, w = nh, nw
        raise ValueError(f"no size near {w}x{h} that the processor keeps")

    def grid_thw(self, image: bytes) -> tuple[int, int, int]:
        """(t, h, w) in patches of a prepared image (called per placeholder and per forward: header only)."""
        w, h = image_size(image)
        return 1, h // self.patch_size, w // self.patch_size

    def num_image_tokens(self, image: bytes) -> int:
        t, h, w = self.grid_thw(image)
        return t * h * w // (self.merge_size ** 2)

    @property
    def image_placeholder(self) -> str:
        return "<|vision_start|><|image_pad|><|vision_end|>"

    def expand_placeholders(self, ids: list[int], images: list[bytes]) -> list[int]:
        found = sum(t == self.image_token_id for t in ids)
        if found != len(images):
            raise ValueError(f"{found} image placeholders for {len(images)} images")
        out: list[int] = []
        k = 0
        for t in ids:
            if t == self.image_token_id:
                out.extend([t] * self.num_image_tokens(images[k]))
                k += 1
            else:
                out.append(t)
        return out

    def collapse_placeholders(self, ids: list[int]) -> list[int]:
        out: list[int] = []
        for t in ids:
            if not (t == self.image_token_id and out and out[-1] == t):
                out.append(t)
        return out

    def is_image_token(self, token_id: int) -> bool:
        return token_id == self.image_token_id

    # ---- learner inputs ----------------------------------------------------------------------------
    def position_ids(self, ids: list[int], images: list[bytes]) -> Any:
        """(3, L) mrope positions of one expanded sequence (see the module docstring)."""
        import torch

        grids = iter([self.grid_thw(im) for im in images])
        parts: list[Any] = []
        pos, i, n = 0, 0, len(ids)
        while i < n:
            if ids[i] != self.image_token_id:
                j = i
                while j < n and ids[j] != self.image_token_id:
                    j += 1
                parts.append(torch.arange(pos, pos + j - i).expand(3, -1))
                pos += j - i
                i = j
                continue
            t, h, w = next(grids)
            gh, gw = h // self.merge_size, w // self.merge_size
            tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(gh), torch.arange(gw), indexing="ij")
            parts.append(torch.stack([tt, hh, ww]).reshape(3, -1) + pos)
            i += t * gh * gw
            pos += max(gh, gw)
        return torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)

    def forward_inputs(self, sequences: list[tuple[list[int], list[bytes]]], device: Any) -> dict[str, Any]:
        import torch

        inputs = super().forward_inputs(sequences, device)
        B, L = inputs["input_ids"].shape
        positions = torch.zeros(3, B, L, dtype=torch.long)
        for b, (ids, images) in enumerate(sequences):
            positions[:, b, : len(ids)] = self.position_ids(ids, images)
        inputs["position_ids"] = positions.to(device)
        images = [im for _, ims in sequences for im in ims]
        if images:
            out = self.image_processor(images=[decode_image(im) for im in images], return_tensors="pt")
            expected = torch.tensor([self.grid_thw(im) for im in images])
            if not torch.equal(out["image_grid_thw"], expected):  # the processor resized: budgets drifted
                raise ValueError(f"image processor grids {out['image_grid_thw'].tolist()} != {expected.tolist()}")
            inputs["pixel_values"] = out["pixel_values"].to(device)
            inputs["image_grid_thw"] = out["image_grid_thw"].to(device)
        return inputs
