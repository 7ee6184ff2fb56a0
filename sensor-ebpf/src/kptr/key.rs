//! A kernel key and the credentials a key permission is checked against.

use super::*;
use crate::off;

impl KeyPtr {
    /// A `key_ref_t` (the key's address with the "possessed" flag in bit
    /// 0) as its key.
    #[inline(always)]
    pub fn from_ref(key_ref: u64) -> Self {
        Self::from_addr(key_ref & !1)
    }

    #[inline(always)]
    pub fn serial(self) -> Option<i32> {
        member(self.0, off!(key_serial))
    }

    /// The owner (`kuid_t`: its value in the initial namespace).
    #[inline(always)]
    pub fn uid(self) -> Option<u32> {
        member(self.0, off!(key_uid))
    }

    /// `key->type->name`: the type's name string.
    #[inline(always)]
    pub fn type_name(self) -> Option<Ptr> {
        let ty = member_ptr(self.0, off!(key_type))?;
        member_ptr(ty, off!(key_type_name))
    }

    /// The description string.
    #[inline(always)]
    pub fn description(self) -> Option<Ptr> {
        member_ptr(self.0, off!(key_desc))
    }
}

impl CredPtr {
    /// The file-system uid (what key permissions are checked against).
    #[inline(always)]
    pub fn fsuid(self) -> Option<u32> {
        member(self.0, off!(cred_fsuid))
    }
}
