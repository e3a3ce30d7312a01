DROP TABLE notes_archive;
