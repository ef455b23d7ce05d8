"""The Redis stores: the only code that spells keys or runs Lua."""
