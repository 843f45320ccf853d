"""The shared frame decoder: simplejpeg and Pillow give identical pixels; buffer checks."""
import io

import numpy as np
import pytest
from PIL import Image

from data_pipelines import image_codec


def _encode(image, fmt):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=fmt, quality=90) if fmt == "JPEG" else Image.fromarray(image).save(buf, format=fmt)
  return buf.getvalue()


@pytest.mark.parametrize("shape", [(200, 200, 3), (84, 84, 3), (224, 224, 3)])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decoders_agree(shape, fmt):
  rng = np.random.default_rng(0)
  image = (rng.uniform(0, 1, shape) * np.linspace(0, 255, shape[1])[None, :, None]).astype(np.uint8)
  data = _encode(image, fmt)
  got = image_codec.decode_image(data)
  np.testing.assert_array_equal(got, image_codec.decode_image_pil(data))
  if fmt == "PNG":
    np.testing.assert_array_equal(got, image)
  out = np.zeros(shape, np.uint8)
  assert image_codec.decode_image(memoryview(data), out) is out
  np.testing.assert_array_equal(out, got)


def test_buffer_of_the_wrong_shape_is_named():
  data = _encode(np.zeros((8, 8, 3), np.uint8), "JPEG")
  with pytest.raises(ValueError, match=r"clip 'x'.*\(8, 8, 3\).*\(4, 4, 3\)"):
    image_codec.decode_image(data, np.zeros((4, 4, 3), np.uint8), what="clip 'x'")
