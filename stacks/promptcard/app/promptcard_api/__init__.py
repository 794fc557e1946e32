"""Reference backend for the Prompt Card System, used as stackcheck's system under test."""
