"""Wire schemas of the model routes, as each API's reference defines them: unknown fields are accepted
and ignored (clients send vendor extras); known fields are typed and bounded, so nonsense is a 400
before any model is touched."""
