"""System tests: real server processes, real databases, real failures."""
