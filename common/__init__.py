"""What the dispatcher, the workers and client code all speak: settings, codec, keys, scripts."""
