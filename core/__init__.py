"""The ground floor: errors, safe file writing and installed versions. Imported by models,
converters and pipeline; never by device_tests, which travels alone to the boards."""
