"""The one base class for mistakes a user can fix: bad config, missing or corrupt data or checkpoints.

Entry points print such an error as one line (`error: <message>`) and exit 2; anything
else is a bug and keeps its traceback. So the message must stand alone: name the file,
config key or field, say what was expected, and what to do.
"""


class UserError(Exception):
  """An expected, user-fixable error; its message is the whole report."""


class ConfigError(UserError, ValueError):
  """A config field (or command-line flag) has a value the run cannot use; the message names it.

  Also a ValueError, which is what these checks raised before UserError existed."""
