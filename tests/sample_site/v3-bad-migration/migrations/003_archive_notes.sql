-- Fails halfway on purpose: the table is created, then the copy hits a column that does not exist.
CREATE TABLE notes_archive (LIKE notes INCLUDING ALL);
INSERT INTO notes_archive SELECT * FROM notes WHERE archived;
