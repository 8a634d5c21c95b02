import Testing
import TrackingCore

@Suite("SQLScriptSplitter: what ends a statement")
struct SQLScriptSplitterTests {
    @Test("plain statements split on semicolons; whitespace is trimmed; a missing final semicolon is fine")
    func plain() {
        #expect(SQLScriptSplitter.split("SELECT 1;\n  SELECT 2 ;\n\nSELECT 3") == ["SELECT 1", "SELECT 2", "SELECT 3"])
    }

    @Test("empty statements and blank scripts produce nothing")
    func empty() {
        #expect(SQLScriptSplitter.split("") == [])
        #expect(SQLScriptSplitter.split(" ;\n;; \n") == [])
    }

    @Test("a semicolon inside a string literal does not split, also with doubled quotes")
    func stringLiterals() {
        #expect(SQLScriptSplitter.split("SELECT 'a;b'; SELECT 'it''s; fine', 'x'; SELECT ''")
            == ["SELECT 'a;b'", "SELECT 'it''s; fine', 'x'", "SELECT ''"])
    }

    @Test("a semicolon inside a quoted identifier does not split")
    func quotedIdentifiers() {
        #expect(SQLScriptSplitter.split(#"CREATE TABLE "odd;name" ("col;x" int, "say ""hi"";" text); SELECT 1"#)
            == [#"CREATE TABLE "odd;name" ("col;x" int, "say ""hi"";" text)"#, "SELECT 1"])
    }

    @Test("a $$ body is one statement")
    func dollarBody() {
        let script = """
            CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM 1; RETURN 2;
            END
            $$;
            SELECT f();
            """
        let statements = SQLScriptSplitter.split(script)
        #expect(statements.count == 2)
        #expect(statements.first?.hasSuffix("END\n$$") == true)
        #expect(statements.last == "SELECT f()")
    }

    @Test("a $tag$ body may contain $$ and other tags; only its own tag closes it")
    func taggedBody() {
        let script = """
            CREATE FUNCTION g() RETURNS text LANGUAGE plpgsql AS $fn$
            BEGIN
                EXECUTE $q$SELECT 'a;b'$q$; RETURN $$x;y$$;
            END $fn$;
            DO $body_2$ BEGIN RAISE NOTICE 'a;'; END $body_2$;
            SELECT 3
            """
        let statements = SQLScriptSplitter.split(script)
        #expect(statements.count == 3)
        #expect(statements[0].hasSuffix("END $fn$"))
        #expect(statements[1] == "DO $body_2$ BEGIN RAISE NOTICE 'a;'; END $body_2$")
        #expect(statements[2] == "SELECT 3")
    }

    @Test("a quote inside a dollar body does not open a string")
    func quoteInsideDollarBody() {
        #expect(SQLScriptSplitter.split("SELECT $$it's$$; SELECT 2") == ["SELECT $$it's$$", "SELECT 2"])
    }

    @Test("$1 and $2 are parameters, not dollar quotes")
    func parameters() {
        #expect(SQLScriptSplitter.split("SELECT $1; SELECT $2::text, $10; SELECT 3")
            == ["SELECT $1", "SELECT $2::text, $10", "SELECT 3"])
        #expect(SQLScriptSplitter.split("INSERT INTO t VALUES ($1, $2); SELECT $$a;b$$")
            == ["INSERT INTO t VALUES ($1, $2)", "SELECT $$a;b$$"])
    }

    @Test("semicolons and quotes in line and block comments do not split")
    func comments() {
        let script = """
            -- header; don't split here
            SELECT 1; -- trailing; comment
            /* block; with 'quote
               and "identifier; */ SELECT 2;
            -- only a comment at the end;
            """
        let statements = SQLScriptSplitter.split(script)
        #expect(statements.count == 2)
        #expect(statements[0].hasSuffix("SELECT 1"))
        #expect(statements[0].hasPrefix("-- header"))
        #expect(statements[1].hasSuffix("SELECT 2"))
    }

    @Test("a trailing comment-only chunk is not a statement")
    func commentOnlyChunk() {
        #expect(SQLScriptSplitter.split("SELECT 1;\n-- the end\n-- really") == ["SELECT 1"])
    }

    @Test("an escape string with a backslash-quote keeps its semicolon")
    func escapeString() {
        #expect(SQLScriptSplitter.split(#"SELECT E'it\'s; here'; SELECT 2"#) == [#"SELECT E'it\'s; here'"#, "SELECT 2"])
    }
}
