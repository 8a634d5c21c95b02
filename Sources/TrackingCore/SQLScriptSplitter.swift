/// Splits a SQL script into single statements.
///
/// PostgreSQL's extended query protocol (the one PostgresNIO speaks) accepts one statement per
/// query, so migration files are split here. Semicolons inside quotes, quoted identifiers,
/// dollar-quoted bodies (`$$ … $$`, `$fn$ … $fn$`) and comments do not end a statement.
public enum SQLScriptSplitter {
    public static func split(_ script: String) -> [String] {
        let chars = Array(script.unicodeScalars)
        var statements: [String] = []
        var current = String.UnicodeScalarView()
        var index = 0

        func flush() {
            let text = String(current).trimmingWhitespace()
            if !text.isEmpty, !isOnlyComments(text) { statements.append(text) }
            current.removeAll()
        }

        while index < chars.count {
            let c = chars[index]
            let next: Unicode.Scalar? = index + 1 < chars.count ? chars[index + 1] : nil

            if c == "-" && next == "-" {  // line comment
                while index < chars.count && chars[index] != "\n" { current.append(chars[index]); index += 1 }
                continue
            }
            if c == "/" && next == "*" {  // block comment (not nested; PostgreSQL nests, we never do)
                current.append(c); current.append("*"); index += 2
                while index < chars.count && !(chars[index] == "*" && index + 1 < chars.count && chars[index + 1] == "/") {
                    current.append(chars[index]); index += 1
                }
                if index < chars.count { current.append("*"); current.append("/"); index += 2 }
                continue
            }
            if c == "'" || c == "\"" {  // string literal or quoted identifier; doubled quote escapes
                // E'…' strings also escape with a backslash.
                let previous: Unicode.Scalar? = index > 0 ? chars[index - 1] : nil
                let backslashEscapes = c == "'" && (previous == "E" || previous == "e")
                current.append(c); index += 1
                while index < chars.count {
                    if backslashEscapes && chars[index] == "\\" && index + 1 < chars.count {
                        current.append(chars[index]); current.append(chars[index + 1]); index += 2
                        continue
                    }
                    current.append(chars[index])
                    if chars[index] == c {
                        if index + 1 < chars.count && chars[index + 1] == c {
                            current.append(c); index += 2; continue
                        }
                        index += 1
                        break
                    }
                    index += 1
                }
                continue
            }
            if c == "$", let tag = dollarTag(chars, at: index) {
                current.append(contentsOf: tag); index += tag.count
                // copy until the same tag closes the body
                while index < chars.count {
                    if chars[index] == "$", matches(chars, at: index, tag) {
                        current.append(contentsOf: tag); index += tag.count
                        break
                    }
                    current.append(chars[index]); index += 1
                }
                continue
            }
            if c == ";" {
                flush(); index += 1
                continue
            }
            current.append(c); index += 1
        }
        flush()
        return statements
    }

    /// `$$` or `$name$` starting at `index`, or nil when the `$` is a parameter like `$1`.
    private static func dollarTag(_ chars: [Unicode.Scalar], at index: Int) -> [Unicode.Scalar]? {
        var end = index + 1
        while end < chars.count {
            let c = chars[end]
            if c == "$" { return Array(chars[index...end]) }
            let isTagChar = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_"
                || (end > index + 1 && c >= "0" && c <= "9")
            if !isTagChar { return nil }
            end += 1
        }
        return nil
    }

    private static func matches(_ chars: [Unicode.Scalar], at index: Int, _ tag: [Unicode.Scalar]) -> Bool {
        guard index + tag.count <= chars.count else { return false }
        for offset in 0..<tag.count where chars[index + offset] != tag[offset] { return false }
        return true
    }

    private static func isOnlyComments(_ text: String) -> Bool {
        text.split(separator: "\n").allSatisfy { line in
            let trimmed = String(line).trimmingWhitespace()
            return trimmed.isEmpty || trimmed.hasPrefix("--")
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
