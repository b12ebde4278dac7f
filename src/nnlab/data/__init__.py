"""LightningDataModules: they generate or load the splits and know nothing about models."""
