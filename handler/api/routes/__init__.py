"""The model routes: each validates its body, opens a model call (`handler.api.calls`), starts its
replies on the engine and hands them to its format's shaper (`handler.api.answers`)."""
