"""The one base class for mistakes a user can fix: bad config, missing or corrupt data or checkpoints.

Entry points print such an error as one line (`error: <message>`) and exit 2; anything
else is a bug and keeps its traceback. So the message must stand alone: name the file,
config key or field, say what was expected, and what to do.
"""


class UserError(Exception):
  """An expected, user-fixable error; its message is the whole report."""
