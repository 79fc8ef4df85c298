"""Personal-account bot sessions (itchat), reached only through the Redis bus."""
