"""The MCP server for coding agents (issue 8). Only this package imports the ``mcp`` SDK."""
