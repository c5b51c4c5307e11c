"""The sandbox: local emulators of the WRK Platform, the GitHub REST subset, SMTP and Slack."""
