"""One shaper per wire format: a model call's replies (engine events) in, that format's JSON body or
stream frames out. Shapers know their format only; the call's lifetime is `handler.api.calls`'s."""
