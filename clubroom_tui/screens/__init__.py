"""The app's screens, one a file: login, dashboard, room."""
