import Foundation

/// A parsed JSON value, for manifests and workload files whose fields vary by op.
public enum JSONValue: Decodable, Sendable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// As JSON writes it (numbers as Swift prints a Double: 2.0, 2.5).
    public var description: String {
        switch self {
        case .null: "null"
        case .bool(let value): "\(value)"
        case .number(let value): "\(value)"
        case .string(let value): "\"\(value)\""
        case .array(let values): "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .object(let fields):
            "{" + fields.keys.sorted().map { "\"\($0)\": \(fields[$0]!)" }.joined(separator: ", ") + "}"
        }
    }

    public var number: Double? { if case .number(let v) = self { v } else { nil } }
    public var string: String? { if case .string(let v) = self { v } else { nil } }
    public var bool: Bool? { if case .bool(let v) = self { v } else { nil } }
    public var array: [JSONValue]? { if case .array(let v) = self { v } else { nil } }
    public var object: [String: JSONValue]? { if case .object(let v) = self { v } else { nil } }
}

/// Typed, erroring access to an object's fields; `context` names the object in errors.
public struct JSONFields: Sendable {
    public let fields: [String: JSONValue]
    public let context: String

    public init(_ fields: [String: JSONValue], context: String) {
        self.fields = fields
        self.context = context
    }

    public func has(_ key: String) -> Bool { fields[key] != nil && fields[key] != .null }

    public func int(_ key: String) throws -> Int {
        guard let field = fields[key] else { throw BackpropError(.format, "\(context): no field '\(key)'") }
        guard let value = field.number, value == value.rounded(), abs(value) < 1e12 else {
            throw BackpropError(.format, "\(context): field '\(key)' must be a whole number, got \(field)")
        }
        return Int(value)
    }

    public func int(_ key: String, default value: Int) throws -> Int {
        has(key) ? try int(key) : value
    }

    public func double(_ key: String, default value: Double) throws -> Double {
        has(key) ? try double(key) : value
    }

    public func double(_ key: String) throws -> Double {
        guard let value = fields[key]?.number else {
            throw BackpropError(.format, "\(context): field '\(key)' must be a number")
        }
        return value
    }

    public func string(_ key: String) throws -> String {
        guard let value = fields[key]?.string else {
            throw BackpropError(.format, "\(context): field '\(key)' must be a string")
        }
        return value
    }

    /// true or false, or 1 or 0 (the model spec's flags).
    public func bool(_ key: String, default value: Bool) throws -> Bool {
        guard has(key) else { return value }
        switch fields[key] {
        case .bool(let flag): return flag
        case .number(let number) where number == 0 || number == 1: return number == 1
        default: throw BackpropError(.format, "\(context): field '\(key)' must be true or false (or 1 or 0)")
        }
    }

    /// `pair(key)`, or `value` when the field is absent.
    public func pair(_ key: String, default value: (Int, Int)) throws -> (Int, Int) {
        has(key) ? try pair(key) : value
    }

    /// A per-axis pair (height, width): a whole number for both axes, or a list of two.
    public func pair(_ key: String) throws -> (Int, Int) {
        let values = try ints(key)
        switch values.count {
        case 1: return (values[0], values[0])
        case 2: return (values[0], values[1])
        default:
            throw BackpropError(
                .format, "\(context): field '\(key)' must be a number or a list of two, got \(values.count)")
        }
    }

    /// A whole number or a list of whole numbers ("stride": 2 or [2, 1]), as a list.
    public func ints(_ key: String) throws -> [Int] {
        if let value = fields[key]?.array {
            return try value.enumerated().map { index, element in
                guard let number = element.number, number == number.rounded(), abs(number) < 1e12 else {
                    throw BackpropError(.format, "\(context): field '\(key)' element \(index) must be a whole number")
                }
                return Int(number)
            }
        }
        return [try int(key)]
    }
}
