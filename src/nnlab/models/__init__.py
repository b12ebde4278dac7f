"""Networks: plain nn.Modules that know nothing about Lightning, logging or data."""
