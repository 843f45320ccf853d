"""Errors for datasets that are missing, unfinished or malformed: the user fixes the data or the path.

They derive from gr1_jax.user_errors.UserError so that every entry point (training,
evaluation, visualisation, the pipelines' own CLIs) reports them as one `error:` line
without knowing each pipeline's classes. That module is pure Python and `gr1_jax`'s
package import is cheap, so data_pipelines still imports no JAX. They also keep the
built-in bases these checks raised before (ValueError, FileNotFoundError).
"""
from gr1_jax.user_errors import UserError


class DataError(UserError, ValueError):
  """A dataset is unusable: the message names the file or directory and what is wrong."""


class DataNotFoundError(DataError, FileNotFoundError):
  """A dataset (or one of its files) is not where it should be."""
