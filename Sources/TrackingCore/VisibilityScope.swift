/// Which devices a user may see, by device group and grade (the ACL of the live map).
///
/// Per group either every grade up to a maximum (`{"max_grade": 3}`, up-to mode) or an explicit
/// set (`{"grades": [1, 4]}`); groups not listed are invisible. Stored as JSON in `users.scope`.
public struct VisibilityScope: Sendable, Equatable, Hashable {
    public enum GradeRule: Sendable, Equatable, Hashable {
        case upTo(Int)
        case oneOf(Set<Int>)

        func allows(_ grade: Int) -> Bool {
            switch self {
            case .upTo(let max): return grade <= max
            case .oneOf(let grades): return grades.contains(grade)
            }
        }
    }

    public static let maxGroups = 1_000
    public static let gradeRange = 0...1_000

    public let groups: [String: GradeRule]

    public init(groups: [String: GradeRule]) {
        self.groups = groups
    }

    public func allows(group: String, grade: Int) -> Bool {
        groups[group]?.allows(grade) ?? false
    }

    /// Parses and validates `{"groups": {...}}`; every mistake names its field.
    public init(json value: JSONValue) throws(APIError) {
        guard case .object(let root) = value else {
            throw APIError.invalid("scope must be an object like {\"groups\": {\"vans\": {\"max_grade\": 3}}}", field: "scope", index: nil)
        }
        if let unknown = root.keys.first(where: { $0 != "groups" }) {
            throw APIError.invalid("unknown scope field '\(unknown.prefix(40))'; only 'groups' is allowed", field: unknown, index: nil)
        }
        guard case .object(let groupRules)? = root["groups"] else {
            throw APIError.invalid("groups must be an object of group name → {\"max_grade\": n} or {\"grades\": [..]}", field: "groups", index: nil)
        }
        guard groupRules.count <= Self.maxGroups else {
            throw APIError.invalid("at most \(Self.maxGroups) groups per scope", field: "groups", index: nil)
        }
        var groups: [String: GradeRule] = [:]
        for (name, rule) in groupRules {
            let field = "groups.\(name.prefix(100))"
            guard (1...100).contains(name.count), !name.contains("\u{0}") else {
                throw APIError.invalid("group names are 1–100 characters", field: field, index: nil)
            }
            groups[name] = try Self.parseRule(rule, field: field)
        }
        self.groups = groups
    }

    private static func parseRule(_ rule: JSONValue, field: String) throws(APIError) -> GradeRule {
        guard case .object(let members) = rule, members.count == 1 else {
            throw APIError.invalid("each group needs exactly one of {\"max_grade\": n} or {\"grades\": [..]}", field: field, index: nil)
        }
        switch members.first! {
        case ("max_grade", let value):
            guard let grade = gradeValue(value) else {
                throw APIError.invalid("max_grade must be an integer \(gradeRange.lowerBound)–\(gradeRange.upperBound)", field: field + ".max_grade", index: nil)
            }
            return .upTo(grade)
        case ("grades", .array(let values)):
            guard (1...gradeRange.count).contains(values.count) else {
                throw APIError.invalid("grades must list 1–\(gradeRange.count) grades", field: field + ".grades", index: nil)
            }
            var grades = Set<Int>()
            for value in values {
                guard let grade = gradeValue(value) else {
                    throw APIError.invalid("grades must be integers \(gradeRange.lowerBound)–\(gradeRange.upperBound)", field: field + ".grades", index: nil)
                }
                grades.insert(grade)
            }
            return .oneOf(grades)
        case (let key, _):
            throw APIError.invalid("'\(key.prefix(40))' is not a grade rule; use max_grade (a number) or grades (an array)", field: field, index: nil)
        }
    }

    private static func gradeValue(_ value: JSONValue) -> Int? {
        guard case .number(let number) = value, number.rounded() == number, gradeRange.contains(Int(exactly: number) ?? -1) else { return nil }
        return Int(number)
    }

    /// The stored JSON form, the inverse of `init(json:)`.
    public var json: JSONValue {
        .object(["groups": .object(groups.mapValues { rule in
            switch rule {
            case .upTo(let max): return .object(["max_grade": .number(Double(max))])
            case .oneOf(let grades): return .object(["grades": .array(grades.sorted().map { .number(Double($0)) })])
            }
        })])
    }
}
