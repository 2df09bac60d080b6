"""Pure nn.Modules mirroring the papers' sections (no Lightning): one file per method, vlm/ for host adapters."""
