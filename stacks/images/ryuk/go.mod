module stackcheck.local/reaper

go 1.23
