"""Optional integrations with other libraries (each needs its extra; nothing imports them
unless asked): :mod:`.diffusers` (``pip install -e ".[diffusers]"``)."""
