"""The one error type that user input raises: its message is a single sentence fit to show a person."""


class InputError(ValueError):
    """Bad input from a user (a file, a JSON, a number); the message is one clear sentence."""
