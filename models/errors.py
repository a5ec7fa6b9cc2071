"""The error types that a person is shown (each message a single sentence fit to show a person), and the
sentences that several modules say."""


class InputError(ValueError):
    """Bad input from a user (a file, a JSON, a number); the message is one clear sentence."""


class OutputError(InputError):
    """The model's output is unusable (not finite): shown as one sentence like a refusal, logged as a warning."""


# Sentences that more than one back end says (the real pipeline and the fake one).
NO_FIGURE = "No character was found in the picture for the look; use a picture of one figure that fills the frame."
NO_FAST = "This model has no fast generator (fast_unet/), so it cannot draw a quick preview."
