ALTER TABLE notes ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
CREATE INDEX notes_tags ON notes USING gin (tags);
