package server

// ConsoleURL is consoleURL, for the external tests.
var ConsoleURL = consoleURL
