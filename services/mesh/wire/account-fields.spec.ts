import { describe, expect, it } from "vitest";
import { refusal } from "../../testing/failure.ts";
import { checkEmail, checkPassword } from "./account-fields.ts";

describe("account fields", () => {
  it("take an email address trimmed, keeping its letter case, and refuse what is not one", () => {
    expect(checkEmail("  Owner@Example.com ")).toBe("Owner@Example.com");
    for (const email of ["", "nobody", "a@b", "a b@example.com", "@example.com", `${"x".repeat(320)}@example.com`]) {
      expect(refusal(() => checkEmail(email)), email).toBe("email is not an email address");
    }
    expect(refusal(() => checkEmail("nobody", "owner_email"))).toBe("owner_email is not an email address");
  });

  it("take passwords of 10 to 200 characters, counted in characters", () => {
    expect(checkPassword("correct horse battery")).toBe("correct horse battery");
    expect(checkPassword("🔑".repeat(10))).toHaveLength(20);
    expect(refusal(() => checkPassword("short"))).toBe("password must have at least 10 characters");
    expect(refusal(() => checkPassword("🔑".repeat(9)))).toMatch(/at least 10/);
    expect(checkPassword("p".repeat(200))).toHaveLength(200);
    expect(refusal(() => checkPassword("p".repeat(201), "owner_password"))).toBe("owner_password must have at most 200 characters");
  });
});
